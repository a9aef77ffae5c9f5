"""Azure Machine Learning support for the ``azureml`` backend: sign-in, workspace discovery,
the two managed kinds' specs, and how Azure's resources and errors read in jupyter_compute's terms."""
