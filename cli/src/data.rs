//! Data sets: the UCI handwritten digits shipped inside smartcore (no download),
//! MNIST-format IDX files from a directory, plain or gzipped (`--data idx:DIR`), and
//! Fashion-MNIST from Debian's `dataset-fashion-mnist` package (`--data fashion-mnist`).

pub use crate::idx::{Idx, IdxError, idx_bytes};
pub use gradcast_candle::data::Dataset;
use gradcast_candle::rng::SplitMix64;
use std::fmt;
use std::path::{Path, PathBuf};

/// A training set and a held-out test set.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    /// A short name of the source (`"digits"`, `"fashion-mnist"`, `"idx:<dir>"`).
    pub name: String,
    /// Training samples.
    pub train: Dataset,
    /// Held-out test samples, never trained on.
    pub test: Dataset,
}

/// Why a data set could not be loaded.
#[derive(Debug)]
#[non_exhaustive]
pub enum DataError {
    /// A file of the IDX layout is missing.
    Missing {
        /// The directory searched.
        dir: PathBuf,
        /// The standard file name looked for.
        name: &'static str,
    },
    /// A file could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file is gzip-compressed (IDX files are distributed as `.gz`).
    Compressed {
        /// The file.
        path: PathBuf,
    },
    /// A gzip-compressed file cannot be unpacked (truncated, corrupt, or too large).
    Gzip {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A data set that comes from a system package is not installed.
    NotInstalled {
        /// The data set.
        name: &'static str,
        /// The Debian package that installs it.
        package: &'static str,
        /// The directories searched, in order.
        tried: Vec<PathBuf>,
    },
    /// A file is not a valid IDX file of the expected shape.
    BadIdx {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Images and labels do not belong together.
    Mismatch {
        /// What does not match.
        reason: String,
    },
    /// The embedded digits data set is not what this build expects.
    Digits {
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::Missing { dir, name } => write!(
                f,
                "{}: no file `{name}` (an IDX directory holds train-images-idx3-ubyte, \
                 train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, \
                 each plain or gzipped with a .gz suffix)",
                dir.display()
            ),
            DataError::Io { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            DataError::Compressed { path } => write!(
                f,
                "{}: file is gzip-compressed; unpack it first (gunzip)",
                path.display()
            ),
            DataError::Gzip { path, reason } => {
                write!(
                    f,
                    "{}: cannot unpack the gzip data: {reason}",
                    path.display()
                )
            }
            DataError::NotInstalled {
                name,
                package,
                tried,
            } => {
                write!(f, "{name}: not found (looked in ")?;
                for (i, p) in tried.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{}", p.display())?;
                }
                write!(
                    f,
                    "); install Debian's `{package}` package (apt-get install {package}) or \
                     pass --data idx:DIR with the four IDX files"
                )
            }
            DataError::BadIdx { path, reason } => {
                write!(f, "{}: not a valid IDX file: {reason}", path.display())
            }
            DataError::Mismatch { reason } => write!(f, "IDX data set: {reason}"),
            DataError::Digits { reason } => write!(f, "digits data set: {reason}"),
        }
    }
}

impl std::error::Error for DataError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DataError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The UCI optical recognition of handwritten digits (1797 8x8 images, 16 grey levels, 10
/// classes) as shipped in smartcore's `datasets` feature, scaled to `[0, 1]`.
///
/// # Errors
/// [`DataError::Digits`] if the embedded data do not have the expected shape.
pub fn digits() -> Result<Dataset, DataError> {
    let ds = smartcore::dataset::digits::load_dataset();
    let bad = |reason: String| DataError::Digits { reason };
    if ds.num_features != 64 || ds.data.len() != ds.num_samples * 64 {
        return Err(bad(format!(
            "expected 64 features per sample, found {} ({} values for {} samples)",
            ds.num_features,
            ds.data.len(),
            ds.num_samples
        )));
    }
    let mut labels = Vec::with_capacity(ds.num_samples);
    for (i, &t) in ds.target.iter().enumerate() {
        if !(0.0..=9.0).contains(&t) || t.fract() != 0.0 {
            return Err(bad(format!("sample {i} has label {t}, not a digit 0-9")));
        }
        labels.push(t as u8);
    }
    if labels.len() != ds.num_samples {
        return Err(bad(format!(
            "{} labels for {} samples",
            labels.len(),
            ds.num_samples
        )));
    }
    let features = ds
        .data
        .iter()
        .map(|&v| (v / 16.0).clamp(0.0, 1.0))
        .collect();
    Ok(Dataset {
        features,
        labels,
        dim: 64,
        classes: 10,
    })
}

/// Splits `data` into train and test sets: a seeded shuffle, then the last
/// `round(test_fraction * len)` samples are held out.
pub fn split(name: &str, data: &Dataset, test_fraction: f64, seed: u64) -> Split {
    let mut order: Vec<usize> = (0..data.len()).collect();
    SplitMix64::new(seed ^ 0x5EED_5A17_0F5A).shuffle(&mut order);
    let n_test = ((data.len() as f64) * test_fraction).round() as usize;
    let n_test = n_test.min(data.len());
    let (train, test) = order.split_at(data.len() - n_test);
    Split {
        name: name.to_string(),
        train: data.select(train),
        test: data.select(test),
    }
}

/// The digits data set with a seeded 80/20 train/test split.
///
/// # Errors
/// As [`digits`].
pub fn digits_split(seed: u64) -> Result<Split, DataError> {
    Ok(split("digits", &digits()?, 0.2, seed))
}

/// The standard IDX file names (and the dotted variant some mirrors use).
const IDX_FILES: [(&str, &str); 4] = [
    ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
];

/// The file for one of [`IDX_FILES`] in `dir`: the plain names first, then their `.gz`.
fn find_idx(dir: &Path, names: (&'static str, &'static str)) -> Result<PathBuf, DataError> {
    for name in [names.0, names.1] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    for name in [names.0, names.1] {
        let gz = dir.join(format!("{name}.gz"));
        if gz.is_file() {
            return Ok(gz);
        }
    }
    Err(DataError::Missing {
        dir: dir.to_path_buf(),
        name: names.0,
    })
}

/// Parses an IDX file of unsigned bytes (type code `0x08`) with `expect_dims` dimensions
/// ([`crate::idx::parse_idx`], with `path` in the error).
///
/// # Errors
/// [`DataError::Compressed`] for gzip data; [`DataError::BadIdx`] naming the problem: short
/// file, bad magic, another element type, a different number of dimensions, or a length that
/// does not match the dimensions.
pub fn parse_idx(path: &Path, bytes: &[u8], expect_dims: usize) -> Result<Idx, DataError> {
    crate::idx::parse_idx(bytes, expect_dims).map_err(|e| idx_error(path, e))
}

/// [`IdxError`] as [`DataError`], with the file's path.
fn idx_error(path: &Path, e: IdxError) -> DataError {
    let path = path.to_path_buf();
    match e {
        IdxError::Compressed => DataError::Compressed { path },
        IdxError::Invalid { reason } => DataError::BadIdx { path, reason },
        IdxError::Gzip { reason } => DataError::Gzip { path, reason },
    }
}

/// Reads an IDX file, plain or gzipped ([`crate::idx::parse_idx_file`], at most
/// [`crate::idx::MAX_UNPACKED`] bytes unpacked).
fn read_idx(path: &Path, expect_dims: usize) -> Result<Idx, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    crate::idx::parse_idx_file(&bytes, expect_dims, crate::idx::MAX_UNPACKED)
        .map_err(|e| idx_error(path, e))
}

fn idx_pair(
    images_path: &Path,
    labels_path: &Path,
    dim: Option<usize>,
) -> Result<Dataset, DataError> {
    let images = read_idx(images_path, 3)?;
    let labels = read_idx(labels_path, 1)?;
    let n = images.dims[0];
    let d = images.dims[1] * images.dims[2];
    if labels.dims[0] != n {
        return Err(DataError::Mismatch {
            reason: format!(
                "{} holds {n} images but {} holds {} labels",
                images_path.display(),
                labels_path.display(),
                labels.dims[0]
            ),
        });
    }
    if let Some(expected) = dim
        && expected != d
    {
        return Err(DataError::Mismatch {
            reason: format!(
                "{} has {d} pixels per image, the training images have {expected}",
                images_path.display()
            ),
        });
    }
    if let Some((i, &l)) = labels.data.iter().enumerate().find(|&(_, &l)| l > 9) {
        return Err(DataError::BadIdx {
            path: labels_path.to_path_buf(),
            reason: format!("label {i} is {l}, not a digit 0-9"),
        });
    }
    Ok(Dataset {
        features: images.data.iter().map(|&p| p as f32 / 255.0).collect(),
        labels: labels.data,
        dim: d,
        classes: 10,
    })
}

/// Loads an MNIST-layout directory: the `train-*` files for training and the `t10k-*` files
/// as the held-out test set.
///
/// # Errors
/// [`DataError`] naming the file and what is wrong with it.
pub fn load_idx_dir(dir: &Path) -> Result<Split, DataError> {
    if !dir.is_dir() {
        return Err(DataError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        });
    }
    let paths = IDX_FILES
        .iter()
        .map(|&names| find_idx(dir, names))
        .collect::<Result<Vec<_>, _>>()?;
    let train = idx_pair(&paths[0], &paths[1], None)?;
    let test = idx_pair(&paths[2], &paths[3], Some(train.dim))?;
    Ok(Split {
        name: format!("idx:{}", dir.display()),
        train,
        test,
    })
}

/// Where [`fashion_mnist`] looks, in order: Debian's `dataset-fashion-mnist` package, then the
/// same layout under `/usr/local`.
pub const FASHION_MNIST_DIRS: [&str; 2] = [
    "/usr/share/datasets/fashion-mnist",
    "/usr/local/share/datasets/fashion-mnist",
];

/// Fashion-MNIST (Zalando: 28x28 grey images of clothing in 10 classes), the standard split of
/// 60,000 training and 10,000 test images, from the gzipped IDX files of Debian's
/// `dataset-fashion-mnist` package ([`FASHION_MNIST_DIRS`]).
///
/// # Errors
/// [`DataError::NotInstalled`] naming the package and the directories tried when none
/// exists; the IDX loader's errors ([`load_idx_dir`]) when one exists but its files are not a
/// valid data set.
pub fn fashion_mnist() -> Result<Split, DataError> {
    let dirs: Vec<PathBuf> = FASHION_MNIST_DIRS.iter().map(PathBuf::from).collect();
    fashion_mnist_in(&dirs)
}

/// [`fashion_mnist`] from the first of `dirs` that exists.
///
/// # Errors
/// As [`fashion_mnist`].
pub fn fashion_mnist_in(dirs: &[PathBuf]) -> Result<Split, DataError> {
    let Some(dir) = dirs.iter().find(|d| d.is_dir()) else {
        return Err(DataError::NotInstalled {
            name: "Fashion-MNIST",
            package: "dataset-fashion-mnist",
            tried: dirs.to_vec(),
        });
    };
    Ok(Split {
        name: "fashion-mnist".into(),
        ..load_idx_dir(dir)?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_the_uci_set() {
        let d = digits().unwrap();
        assert_eq!(d.len(), 1797);
        assert_eq!(d.dim, 64);
        assert!(d.features.iter().all(|v| (0.0..=1.0).contains(v)));
        let mut per_class = [0usize; 10];
        for &l in &d.labels {
            per_class[l as usize] += 1;
        }
        assert!(per_class.iter().all(|&c| (170..=190).contains(&c)));
    }

    #[test]
    fn split_is_seeded_and_disjoint() {
        let d = digits().unwrap();
        let a = split("d", &d, 0.2, 1);
        let b = split("d", &d, 0.2, 1);
        let c = split("d", &d, 0.2, 2);
        assert_eq!(a, b);
        assert_ne!(a.test.labels, c.test.labels);
        assert_eq!(a.train.len() + a.test.len(), 1797);
        assert_eq!(a.test.len(), 359);
    }

    #[test]
    fn idx_errors_say_what_is_wrong() {
        let p = Path::new("x");
        let good = idx_bytes(&[2, 2, 2], &[0; 8]);
        assert_eq!(parse_idx(p, &good, 3).unwrap().dims, vec![2, 2, 2]);
        let msg = |b: &[u8], d| parse_idx(p, b, d).unwrap_err().to_string();
        assert!(msg(&good[..2], 3).contains("shorter than the 4-byte magic"));
        assert!(msg(&good[..good.len() - 1], 3).contains("need 8 data bytes, the file has 7"));
        assert!(msg(&good, 1).contains("3 dimensions, expected 1"));
        let mut t = good.clone();
        t[2] = 0x0d;
        assert!(msg(&t, 3).contains("element type 0x0d"));
        t[0] = 7;
        assert!(msg(&t, 3).contains("magic number"));
        assert!(msg(&[0x1f, 0x8b, 8, 0], 3).contains("gzip"));
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gradcast-data-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Writes a 5-train / 3-test IDX set of 2x3 images into `dir`; `gz` picks the files
    /// written gzipped (by index into [`IDX_FILES`]).
    fn write_set(dir: &Path, gz: [bool; 4]) -> Dataset {
        let img = |n: u32| {
            idx_bytes(
                &[n, 2, 3],
                &(0..n * 6).map(|i| (i * 11) as u8).collect::<Vec<_>>(),
            )
        };
        let lab = |n: u32| idx_bytes(&[n], &(0..n).map(|i| (i % 10) as u8).collect::<Vec<_>>());
        let files = [img(5), lab(5), img(3), lab(3)];
        for ((names, bytes), z) in IDX_FILES.iter().zip(&files).zip(gz) {
            let (name, bytes) = if z {
                (format!("{}.gz", names.0), gzip(bytes))
            } else {
                (names.0.to_string(), bytes.clone())
            };
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        Dataset {
            features: (0..30u32).map(|i| (i * 11) as u8 as f32 / 255.0).collect(),
            labels: (0..5).collect(),
            dim: 6,
            classes: 10,
        }
    }

    #[test]
    fn idx_directories_load_gzipped_or_plain() {
        let dir = scratch("mixed");
        let want = write_set(&dir, [true, false, true, false]);
        let s = load_idx_dir(&dir).unwrap();
        assert_eq!(s.train, want);
        assert_eq!(s.test.len(), 3);
        assert_eq!(s.test.labels, vec![0, 1, 2]);
        // The same set all plain loads identically.
        let plain = scratch("plain");
        write_set(&plain, [false; 4]);
        let p = load_idx_dir(&plain).unwrap();
        assert_eq!((p.train, p.test), (s.train, s.test));
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&plain).unwrap();
    }

    #[test]
    fn broken_gzip_files_name_the_file() {
        let dir = scratch("broken");
        write_set(&dir, [true; 4]);
        let f = dir.join("t10k-labels-idx1-ubyte.gz");
        let bytes = std::fs::read(&f).unwrap();
        std::fs::write(&f, &bytes[..bytes.len() - 5]).unwrap();
        match load_idx_dir(&dir) {
            Err(DataError::Gzip { path, reason }) => {
                assert_eq!(path, f);
                assert!(reason.contains("truncated"), "{reason}");
            }
            other => panic!("expected a gzip error, got {other:?}"),
        }
        let mut corrupt = bytes.clone();
        let at = corrupt.len() - 6; // inside the CRC-32 of the trailer
        corrupt[at] ^= 0x40;
        std::fs::write(&f, &corrupt).unwrap();
        let e = load_idx_dir(&dir).unwrap_err();
        assert!(
            matches!(e, DataError::Gzip { ref path, .. } if *path == f),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("t10k-labels-idx1-ubyte.gz: cannot unpack")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fashion_mnist_absent_names_the_package_and_the_paths() {
        let dirs = [
            PathBuf::from("/nonexistent/a"),
            PathBuf::from("/nonexistent/b"),
        ];
        let e = fashion_mnist_in(&dirs).unwrap_err();
        assert!(matches!(e, DataError::NotInstalled { ref tried, .. } if tried[..] == dirs[..]));
        let m = e.to_string();
        assert!(m.contains("dataset-fashion-mnist"), "{m}");
        assert!(m.contains("/nonexistent/a, /nonexistent/b"), "{m}");
        // A directory that exists is used, and its problems are reported, not skipped.
        let empty = scratch("empty-fashion");
        let e = fashion_mnist_in(&[empty.clone(), dirs[0].clone()]).unwrap_err();
        assert!(matches!(e, DataError::Missing { .. }), "{e:?}");
        std::fs::remove_dir_all(&empty).unwrap();
    }

    #[test]
    fn fashion_mnist_package_loads_the_standard_split() {
        if !FASHION_MNIST_DIRS.iter().any(|d| Path::new(d).is_dir()) {
            println!(
                "SKIP: Debian's dataset-fashion-mnist package is not installed (looked in {})",
                FASHION_MNIST_DIRS.join(", ")
            );
            return;
        }
        let s = fashion_mnist().unwrap();
        assert_eq!(s.name, "fashion-mnist");
        assert_eq!((s.train.len(), s.test.len()), (60_000, 10_000));
        assert_eq!((s.train.dim, s.test.dim, s.train.classes), (784, 784, 10));
        for set in [&s.train, &s.test] {
            let mut per_class = [0usize; 10];
            for &l in &set.labels {
                per_class[l as usize] += 1;
            }
            // Fashion-MNIST is balanced: 6,000 / 1,000 images of each class.
            assert_eq!(per_class, [set.len() / 10; 10]);
            assert!(set.features.iter().all(|v| (0.0..=1.0).contains(v)));
        }
        // Not a blank image set: pixels span the whole range.
        let max = s.train.features.iter().copied().fold(0.0f32, f32::max);
        let mean = s.train.features.iter().sum::<f32>() / s.train.features.len() as f32;
        assert_eq!(max, 1.0);
        assert!((0.2..0.4).contains(&mean), "mean pixel {mean}");
    }
}
