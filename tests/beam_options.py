"""Beam options as users pass them for the remote runners README documents, shared by the
tests of the preprocess step and of the Flink manifests."""

DATAFLOW_AUTOSCALING = [
    "--runner=DataflowRunner",
    "--project=my-project",
    "--region=europe-west4",
    "--machine_type=n2-highmem-4",
    "--autoscaling_algorithm=THROUGHPUT_BASED",
    "--num_workers=2",
    "--max_num_workers=50",
    "--disk_size_gb=100",
    "--experiments=use_runner_v2",
]
# A Flink session cluster from the Flink Kubernetes Operator, reached through Beam's Flink job
# server (containers/beam/flink.yaml): workers in a Beam worker pool beside each TaskManager.
FLINK_WORKER_POOL = [
    "--runner=PortableRunner",
    "--job_endpoint=imgclf-beam-job-server:8099",
    "--artifact_endpoint=imgclf-beam-job-server:8098",
    "--environment_type=EXTERNAL",
    "--environment_config=localhost:50000",
    "--parallelism=8",
]
FLINK_DOCKER = ["--runner=FlinkRunner", "--flink_master=imgclf-flink-rest:8081", "--parallelism=8"]
