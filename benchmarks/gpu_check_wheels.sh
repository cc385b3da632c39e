#!/usr/bin/env bash
# Fetches, into .whl/, the wheels jaxtrain needs that a GPU machine's Python 3.12 image may lack
# (its image has jax, flax, optax, orbax-checkpoint, chex, tokenizers, tqdm, ...; see
# benchmarks/gpu_check.sh, which installs .whl/ into /tmp/site). Run it where PyPI is reachable;
# versions are those of requirements-lock.txt. Not needed where `pip install -e .` works.
#
#   bash benchmarks/gpu_check_wheels.sh [PYTHON_VERSION]   # default 3.12
set -eu
cd "$(dirname "$0")/.."
pyver=${1:-3.12}
pins() { grep -iE "^($1)==" requirements-lock.txt; }
packages=$(pins "grain|array_record|tensorflow-datasets|tensorflow-metadata|ml_collections|dm-tree|immutabledict|promise|toml|termcolor|importlib_resources|tensorboardX|simple-parsing|docstring_parser|portpicker|googleapis-common-protos")
mkdir -p .whl
for p in $packages; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl "$p"
done
ls -la .whl
