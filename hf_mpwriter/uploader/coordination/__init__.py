"""A multi-node job's coordination: its nodes' uploaders agree, through the job's own store, on one leader that
commits for all of them, within one budget on the Hub.

The rule (docs/guarantees.md): exact where records are at stake (nothing lost, nothing committed twice, no file
going back, nothing anywhere but the node's own target); a margin where only the budget is (twice the plan).

Glossary (every term the modules use):

- **job's store**: the launcher's TCPStore (torchrun's agent, rank 0's ``env://``), reached with bounded calls.
- **successor store**: one store node 1's uploader serves, where the nodes go on once the job's store is lost.
- **move**: a node's one step, forward only, from the lost job's store to the successor.
- **lost**: a store where nothing listens any more (gone), or that answered nothing for ``store_lost`` (silent).
- **incarnation**: a node's uploader's number, counted in the store; a newer one's offers win.
- **lease**: the store's value naming the node that leads, renewed while its rounds make progress.
- **term**: the store's count of takes of the lease; a leader is ``(node, term)``.
- **leader**: the uploader holding the lease: it claims the offers and commits them in one commit a round.
- **hand-over**: a leader without progress lets the lease go and abstains from it for a while.
- **offer**: a node's files (content already uploaded) put in the store for the leader to commit.
- **claim**: the leader's ``compare_set`` of an offer to taken; the node's own is taking it back.
- **answer**: the leader's word on an offer: committed (with the plan and the node's slots), put off, or failed.
- **put off**: answered "offer again in N s": the budget (or a 429) has no room sooner.
- **unknown age**: an offer a new term (or a store's return) finds: never committed, answered "offer again".
- **budget**: what the logs may spend on the Hub: commits an hour, API requests per 5 minutes, files a commit.
- **plan**: the leader's pacing of the job within the budget: groups of nodes that fill one commit.
- **slot**: a node's time in the plan's wall-clock cycle (its group's, or its own).
- **books**: what the leader spent in the budget's windows, in its memory.
- **own commit**: a node's commit of its own files where no leader answers it, at its own slot.
- **margin**: twice the plan, what faults may spend (a new leader, two stores, own commits, the job's end).
- **closing**: every writer of the node is gone: its offers are its last records, committed whatever the budget.
- **end's burst**: the first nodes (half a window's worth) whose last records go at once, leader or not.
- **hurry**: the uploader was signalled: every wait ends by a third of what is left before its deadline.
- **shared Xet token**: the leader's one Xet write token, used by a node only for a CAS its own Hub names.
- **prepared**: the repository id node 0 resolved, taken by a node only where it is its own configuration's.
"""
