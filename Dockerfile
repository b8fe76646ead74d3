# tfdp for GPU training: TensorFlow 2.15 with CUDA and cuDNN from the official image, then tfdp with
# the exact dependency set of constraints.txt (TF Privacy 0.9.0 needs Keras 2, i.e. TF <= 2.15).
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
