"""Environment variables the compiled pipeline sets for its steps. No TensorFlow, no kfp: the
compiler and the steps (which run with kfp's runtime-only ``kfp.dsl``) both read this."""

# The image a task runs in, for remote Beam workers to run the same code.
STEP_IMAGE_VARIABLE = "IMGCLF_STEP_IMAGE"
