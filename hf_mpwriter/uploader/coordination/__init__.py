"""A multi-node job's coordination: its nodes' uploaders agree, through the job's own store, on one
leader that commits for all of them, within one budget on the Hub.

- ``store``: the one connection to the job's torch.distributed store; bounded calls, prefixed views.
- ``protocol``: the keys the uploaders share and one parser per kind of value read from them.
- ``plan``: what the logs may spend (:class:`~.plan.Budget`) and which node commits when (:class:`~.plan.Plan`).
- ``pacing``: when a node commits, one function of its situation (every case a named branch).
- ``member``: a node's target in a job: it offers its files to the leader, or commits them itself.
- ``offers``: a node's offers to the leader and the leader's answers, in the store.
- ``joining``: a node's entry into the store (its incarnation and keys), its folder, the target node 0 prepared.
- ``xet_share``: the job's one Xet write token: the leader publishes it, the nodes upload with it.
- ``successor``: the store the nodes go on through once the job's store is gone.
- ``lease``: which node leads, kept only while its rounds make progress.
- ``leader``: the rounds of the node that holds the lease: claim the offers, one commit of all, the answers.
- ``factory``: the uploader's entry point: a node's target and its situation from the logdir's settings.

The job run (:mod:`hf_mpwriter.uploader.jobrun`) uses ``store`` and ``protocol``, never ``member`` or ``leader``.
"""
