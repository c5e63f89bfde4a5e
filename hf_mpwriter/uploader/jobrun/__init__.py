"""The job run: one TensorBoard run with each tag's statistics across every rank of the job.

- ``stats``: one scalar's statistics over some ranks at one step, in a form that merges exactly.
- ``histogram``: some ranks' histograms of one tag and step merged into one.
- ``points``: a point of either kind, and the one ``merge``.
- ``view``: a node's reading of its ranks' files into points, and the run file it writes.
- ``values``: the values a node and a group of nodes put in the job's store.
- ``exchange``: a node's rounds: its points to the job's leader, and the leader's merge of every node's.
- ``tree``: the groups of a large job's merge tree, each with a store of its own.

It reaches the job through the coordination package's store only (:mod:`hf_mpwriter.uploader.coordination.store`).
"""
