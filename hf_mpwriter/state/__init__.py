"""The logdir's state directory (``logdir/.hf_mpwriter/``), shared by writers and the uploader.

Its layout and private files, the persistent queue of uploads, writers' registrations and run
directory claims, where run directories go in the logdir (:mod:`.run_dirs`), process liveness, the
uploader election, and the mailbox of requests to it.
"""
