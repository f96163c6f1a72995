"""The steps' logic, by concern, as plain functions with typed parameters: no KFP import here
(the KFP wrappers are ``kfp_steps``), so tests and other runners call the steps directly."""
