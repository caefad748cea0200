#!/usr/bin/env bash
# Install the default dataset (Fashion-MNIST, Debian package dataset-fashion-mnist) if missing.
set -euo pipefail
DIR=/usr/share/datasets/fashion-mnist
if [ -f "$DIR/train-images-idx3-ubyte.gz" ] && [ -f "$DIR/t10k-labels-idx1-ubyte.gz" ]; then
    exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist) ..."
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist
else
    echo "Fashion-MNIST is missing: install the Debian package dataset-fashion-mnist, or put" >&2
    echo "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and" >&2
    echo "t10k-labels-idx1-ubyte.gz in a directory and set dataset.path to it." >&2
    exit 1
fi
