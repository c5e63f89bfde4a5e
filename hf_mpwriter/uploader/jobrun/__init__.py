"""The job run: one TensorBoard run with each tag's statistics across every rank of the job.

- ``stats``: one scalar's statistics over some ranks at one step, in a form that merges exactly.
- ``histogram``: some ranks' histograms of one tag and step merged into one.
- ``points``: a point of either kind, and the one ``merge``.
- ``view``: the reading of the ranks' files into points (a restart, a late rank: the rule of late data).
- ``marks``: where a rank file's steps are, so that a restart reads it again from near its step.
- ``bounds``: how much the view reads in one update and keeps waiting (handed down; tests make them small).
- ``runfile``: the job run's file in TensorBoard's terms (its tags, texts, layout, its own restart).
- ``values``: the values a node and a group of nodes put in the job's store, and the leader's word (restarts too).
- ``outbox``: a node's points the leader has not written yet, and its restarts the leader has not taken in.
- ``exchange``: a node's rounds: its points to the job's leader, and, while it leads, the merge's rounds.
- ``merge``: the leader's merge of every node's points into the job run (when a point is due, who is missing).
- ``tree``: the groups of a large job's merge tree, each with a store of its own.

It reaches the job through the coordination package's store and protocol only (:mod:`hf_mpwriter.uploader.coordination.store`,
:class:`~hf_mpwriter.uploader.coordination.protocol.Seat`).
"""
