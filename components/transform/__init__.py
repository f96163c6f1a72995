"""Transform: preprocess on Apache Beam, and the tensorflow-transform graph that training and
serving share."""
