#!/usr/bin/env bash
# Run here, before scripts/gpu-check.sh travels to a GPU machine: that machine reaches no
# package registry and its image lacks ag's Debian build dependencies (OpenBLAS, Check,
# cJSON, pkg-config) and the Fashion-MNIST data. This downloads their .deb files into
# .gpu-deps/ (git-ignored); name .gpu-deps in the device run's carry, and gpu-check.sh
# unpacks them into a private prefix there. About 40 MiB, the data set most of it.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(pkgconf pkgconf-bin libpkgconf3 libopenblas0-openmp libopenblas-openmp-dev
    libgfortran5 libgomp1 check libsubunit0 libsubunit-dev libcjson1 libcjson-dev zlib1g
    zlib1g-dev dataset-fashion-mnist)
mkdir -p .gpu-deps
cd .gpu-deps
rm -f ./*.deb
apt-get download "${packages[@]}"
du -sh .
