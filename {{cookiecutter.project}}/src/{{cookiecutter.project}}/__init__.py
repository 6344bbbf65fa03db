"""Session-based next-item recommendations on the post-modern stack."""

# Metaflow ships this package in each run's code package, so steps on AWS Batch run the code of
# the run, not the copy installed in the image (which is rebuilt only when its dependencies change).
METAFLOW_PACKAGE_POLICY = "include"
