# tfdp for GPU training: TensorFlow 2.15 with CUDA and cuDNN from the official image, then tfdp with
# the exact dependency set of constraints.txt, the pinned default (constraints-tf2.21.txt is the
# newest tested set, TF 2.21 with tf_keras as Keras 2; it has not been built into an image here).
#
#   docker build -t tfdp .
#   docker run --gpus all -v /data/cifar10:/data/cifar10:ro -v "$PWD/runs:/tfdp/runs" \
#       -v "$PWD/saved_models:/tfdp/saved_models" tfdp \
#       --flagfile=flags/cifar10_resnet20_dp_rmsprop_eps3.flags --data_dir=/data/cifar10
FROM tensorflow/tensorflow:2.15.0-gpu

WORKDIR /tfdp
COPY setup.cfg pyproject.toml constraints.txt README.md ./
COPY tfdp ./tfdp
COPY flags ./flags
# hadolint ignore=DL3013
RUN pip install --no-cache-dir -c constraints.txt .

ENTRYPOINT ["python", "-m", "tfdp.train"]
