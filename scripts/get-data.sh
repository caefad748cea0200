#!/usr/bin/env bash
# What running needs (`make data`, part of `make run`): the `run` packages of
# scripts/apt-packages.txt — the default dataset (Debian's dataset-fashion-mnist) and the KJV
# Bible for the char-LSTM (bible-kjv).
#
# Without apt-get, put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
# t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz in a directory and set dataset.path to it.
set -euo pipefail
exec "$(dirname "$0")/apt-install.sh" run
