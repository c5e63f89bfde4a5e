"""The writer side: what runs in every training process.

The drop-ins (``SummaryWriter``, ``HFSummaryWriter``), their arguments checked once where they
enter, logged values, histograms, ranks, SIGTERM handling, and the supervisor that makes sure the
node's uploader runs. Nothing here hashes, does HTTP or imports the uploader side (``uploader="thread"``
is the one exception, and says so). Data flows on into :mod:`hf_mpwriter.events` (event files) and
:mod:`hf_mpwriter.state` (registrations, requests to the uploader).
"""
