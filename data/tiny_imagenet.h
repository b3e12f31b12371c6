// Tiny ImageNet-200 reader for the original folder layout, with a decoded-pixel cache.
//
//   <dir>/wnids.txt                     one wnid per line; the classes, in this order
//   <dir>/words.txt                     "<wnid>\t<name>, <synonym>, ..." (optional)
//   <dir>/train/<wnid>/images/*.JPEG    the training images of each class
//   <dir>/val/images/*.JPEG             the validation images ...
//   <dir>/val/val_annotations.txt       ... labelled by "<file>\t<wnid>\t<bbox x4>" lines
//
// Any number of classes works (the full 200 or a subset such as tiny-imagenet-200-sub10): the
// classes are the lines of wnids.txt in file order. The "test" split (train = false) reads val/,
// because Tiny ImageNet's own test/ folder has no labels.
//
// Images are decoded with stb_image into 64x64x3 planar uint8 (CHW, like the CIFAR readers);
// grayscale JPEGs get their one channel replicated into R, G and B.
//
// Decoding 100,000 JPEGs takes a while, so the decoded split is cached in one uint8 file:
//   <cache_dir>/tiny-imagenet-<train|val>-<key>.u8cache
// where <key> is a 64-bit FNV-1a hash of the format version, the split, the dataset folder, the
// wnids and every source file's relative path, size and mtime (the annotations file included).
// Adding, removing, resizing or touching a source file changes the key, and the split is decoded
// again. A cache file whose header or size does not match is never trusted: it is rebuilt.
#pragma once
#include <cstdint>
#include <string>

#include "data/cifar.h"

namespace lvit::data {

struct TinyImageNetOptions {
  // Folder for the decoded-pixel cache; empty: default_cache_dir(). Created when missing.
  std::string cache_dir;
  // false: a corrupt JPEG or a non-64x64 image throws UserError naming the file.
  // true: such images are left out and counted (TinyImageNetLoadInfo::skipped).
  bool skip_bad_images = false;
  // false: always decode, never read or write a cache file.
  bool use_cache = true;
};

// What happened during a load, for the app to report.
struct TinyImageNetLoadInfo {
  int64_t skipped = 0;      // bad images left out (only ever non-zero with skip_bad_images)
  bool from_cache = false;  // pixels came from an existing cache file (nothing was decoded)
  std::string cache_path;   // the cache file read or written ("" with use_cache = false)
  // Non-empty when the cache could not be used as intended (a corrupt cache file that was
  // rebuilt, a cache folder that cannot be created or written, ...); the load itself succeeded.
  std::string cache_note;
};

// Loads the train split (train/) or the validation split (val/, when train = false) of the
// Tiny ImageNet folder `dataset_dir` (the folder holding wnids.txt). Returns a dataset named
// "tiny-imagenet", 64x64x3, labels in [0, number of wnids), class_names the first name in
// words.txt of each wnid (the wnid itself where words.txt lacks it).
//
// Throws lvit::UserError, one line naming the file (and line, for text files), for: a missing
// or empty wnids.txt / class folder / val_annotations.txt, a duplicate wnid, an annotation with
// an unknown wnid or naming a missing file, a val image with no annotation, an unreadable file,
// and (unless opt.skip_bad_images) an image that does not decode or is not 64x64.
//
// `info`, when given, receives the skip count and the cache outcome. When it is null, a
// cache_note is printed to stderr as one "warning: ..." line instead of being dropped.
ImageDataset load_tiny_imagenet(const std::string& dataset_dir, bool train,
                                const TinyImageNetOptions& opt = {},
                                TinyImageNetLoadInfo* info = nullptr);

// $LVIT_CACHE_DIR if set (and non-empty), else $XDG_CACHE_HOME/lvit, else $HOME/.cache/lvit;
// "" when none of these variables is set. Does not create the folder.
std::string default_cache_dir();

}  // namespace lvit::data
