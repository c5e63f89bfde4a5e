"""The uploader side: one process per node and logdir (``python -m hf_mpwriter.uploader LOGDIR``).

``schedule`` decides when, ``loop`` runs the process (election, heartbeat, signals), ``commit_cycle``
makes one fenced, audited commit from the queue, ``snapshot`` cuts event files at whole records,
``system_metrics`` samples the node. It talks to the target through :mod:`hf_mpwriter.targets`.
"""
