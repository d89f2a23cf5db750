"""The pipeline's stages, in order: mine, cluster, merge, refine (corrective or the paper's rewrite), and
after the search, each rule's contribution. `gates` checks every text a teacher writes. Each stage takes
the compile's `StageContext` and returns one result record."""
