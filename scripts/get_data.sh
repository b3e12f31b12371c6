#!/usr/bin/env bash
# Downloads, checks (md5) and extracts the datasets lvit trains on.
#
#   scripts/get_data.sh [DIR] [DATASET...]
#
# DIR defaults to ./data. DATASET is any of cifar100, cifar10, tiny-imagenet (default: cifar100
# cifar10). Afterwards DIR holds cifar-100-binary/, cifar-10-batches-bin/ and tiny-imagenet-200/,
# which is what `lvit-train --data-dir DIR` (or $LVIT_DATA=DIR) expects. Datasets already there
# are left alone. Set LVIT_DATA_MIRROR to a base URL (or file:// folder) holding the same archive
# names to download from elsewhere.
set -euo pipefail

usage() {
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
  -h | --help)
    usage
    exit 0
    ;;
esac

dir="${1:-./data}"
[[ $# -gt 0 ]] && shift
datasets=("$@")
[[ ${#datasets[@]} -eq 0 ]] && datasets=(cifar100 cifar10)

die() {
  echo "get_data.sh: $*" >&2
  exit 1
}

md5_of() {
  if command -v md5sum >/dev/null; then
    md5sum "$1" | cut -d' ' -f1
  elif command -v md5 >/dev/null; then
    md5 -q "$1"
  else
    die "neither md5sum nor md5 is installed"
  fi
}

# fetch URL FILE: downloads to FILE.part, then renames. Exit status 2 when unreachable.
fetch() {
  local url="$1" out="$2"
  echo "downloading $url"
  if command -v curl >/dev/null; then
    if ! curl -fL --retry 2 --connect-timeout 20 -o "$out.part" "$url"; then
      rm -f "$out.part"
      echo "no network: could not reach $url" >&2
      exit 2
    fi
  elif command -v wget >/dev/null; then
    if ! wget -q --show-progress -T 20 -t 2 -O "$out.part" "$url"; then
      rm -f "$out.part"
      echo "no network: could not reach $url" >&2
      exit 2
    fi
  else
    die "neither curl nor wget is installed"
  fi
  mv "$out.part" "$out"
}

# get NAME URL ARCHIVE MD5 FOLDER MARKER
get() {
  local name="$1" url="$2" archive="$3" md5="$4" folder="$5" marker="$6"
  if [[ -f "$dir/$folder/$marker" ]]; then
    echo "$name: already in $dir/$folder"
    return
  fi
  if [[ -n "${LVIT_DATA_MIRROR:-}" ]]; then
    url="${LVIT_DATA_MIRROR%/}/$archive"
  fi
  local path="$dir/$archive"
  if [[ ! -f "$path" ]]; then
    fetch "$url" "$path"
  fi
  local got
  got="$(md5_of "$path")"
  if [[ "$got" != "$md5" ]]; then
    rm -f "$path"
    die "$path: md5 $got, expected $md5 (corrupt or changed download; removed, run again)"
  fi
  echo "$name: md5 ok, extracting into $dir/$folder"
  case "$archive" in
    *.tar.gz) tar -xzf "$path" -C "$dir" ;;
    *.zip)
      command -v unzip >/dev/null || die "unzip is not installed (needed for $archive)"
      unzip -q -o "$path" -d "$dir"
      ;;
  esac
  [[ -f "$dir/$folder/$marker" ]] || die "$path: extracted, but $dir/$folder/$marker is missing"
  rm -f "$path"
  echo "$name: done ($dir/$folder)"
}

for ds in "${datasets[@]}"; do # check every name before downloading anything
  case "$ds" in
    cifar100 | cifar-100 | cifar10 | cifar-10 | tiny-imagenet | tiny_imagenet | tinyimagenet) ;;
    *) die "unknown dataset '$ds' (expected cifar100, cifar10 or tiny-imagenet)" ;;
  esac
done
mkdir -p "$dir" || die "cannot create $dir"
for ds in "${datasets[@]}"; do
  case "$ds" in
    cifar100 | cifar-100)
      get CIFAR-100 https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz \
        cifar-100-binary.tar.gz 03b5dce01913d631647c71ecec9e9cb8 cifar-100-binary train.bin
      ;;
    cifar10 | cifar-10)
      get CIFAR-10 https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz \
        cifar-10-binary.tar.gz c32a1d4ab5d03f1284b67883e8d87530 cifar-10-batches-bin \
        data_batch_1.bin
      ;;
    tiny-imagenet | tiny_imagenet | tinyimagenet)
      get "Tiny ImageNet" http://cs231n.stanford.edu/tiny-imagenet-200.zip \
        tiny-imagenet-200.zip 90528d7ca1a48142e341f4ef8d21d0de tiny-imagenet-200 wnids.txt
      ;;
    *) die "unknown dataset '$ds' (expected cifar100, cifar10 or tiny-imagenet)" ;;
  esac
done
