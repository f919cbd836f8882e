# syntax=docker/dockerfile:1
# The example models (`make models`) as an image, for the models-from-image component (dev):
#   make models && docker build -f deploy/containers/models.Dockerfile \
#     -t REGION-docker.pkg.dev/PROJECT/tf-gateway/models:TAG .
# Its initContainer runs `cp -R /models/. /var/models/`: busybox has cp and nothing more.
FROM busybox:1.36
COPY models/ /models/
USER 65532:65532
