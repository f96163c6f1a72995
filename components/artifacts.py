"""The files inside each artifact, named once, by the step that writes them.

An artifact is a folder (or one file) under the pipeline root; the steps that read it, the local
run's summary and the tests find its parts by these names.
"""

# ingest -> manifest; validate -> validated_manifest (the same layout, fewer rows)
MANIFEST = "manifest.csv"
# What ingest was asked for: the data, the snapshot and the split fractions.
INGEST_RECORD = "ingest.json"
# What ingest did to the data's own splits: train images moved to a missing validation split.
SPLITS_RECORD = "splits.json"
SAMPLE_FOLDER = "sample-digits"
QUARANTINE = "quarantine.csv"
VALIDATION_RECORD = "validation.json"
DATA_PROFILE = "data_profile.json"
VALIDATION_REPORT = "report.html"

# preprocess -> examples: <split>/part-*.tfrecord.gz and the images per split
TFRECORD_SUFFIX = ".tfrecord.gz"
COUNTS = "counts.json"
# preprocess -> transform_graph: TFT's own folders, and the image size and resize policy
PREPROCESSING_RECORD = "preprocessing.json"

# tune -> trials
BEST_HYPERPARAMETERS = "best_hyperparameters.json"
TRIALS = "trials.json"

# train -> checkpoints: Keras' BackupAndRestore folder per stage, and each finished stage
FINISHED_STAGE_WEIGHTS = "{stage}-finished.weights.h5"
FINISHED_STAGE_HISTORY = "{stage}-finished.history.json"

# train -> model (a SavedModel; push copies it into the serving root), keras_model
SAVED_MODEL = "saved_model.pb"
ASSETS_EXTRA = "assets.extra"
# In assets.extra/: how the model was trained, its TFLite exports and their check.
TRAINING_RECORD = "training.json"
TFLITE_FOLDER = "tflite"
TFLITE_RECORD = "tflite.json"
KERAS_MODEL = "model.keras"

# evaluate -> evaluation
EVALUATION_RECORD = "evaluation.json"
EVALUATION_REPORT = "report.html"
EVALUATION_SUMMARY = "summary.md"

# push -> a version under <serving_root>/<model_name>/, its assets.extra/ beside the above
WARMUP_REQUESTS = "tf_serving_warmup_requests"
MODEL_CARD = "model_card.json"
# <serving_root>/models.config: TF Serving's model config, with the version labels
MODELS_CONFIG = "models.config"
