"""The KFP pipeline: the DAG, its interface, cluster settings, the local runner, the CLI."""
