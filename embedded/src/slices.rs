//! [`Slices`]: a [`Backend`] over borrowed `f32` slices, for targets without an allocator.
//!
//! The core's [`Encoder`](gradcast_core::encoder::Encoder) drives a [`Backend`]; the core's
//! own reference backend keeps its vectors in `Vec`s and needs `alloc`. On a microcontroller
//! the vectors are static arrays, so this backend's buffer is a borrowed slice
//! (`&'a mut [f32]`) and every operation is the core's reference code on that slice: the
//! results are the reference's, byte for byte and bit for bit (the host test checks it).

use core::fmt;
use core::marker::PhantomData;
use core::ops::Range;

use gradcast_core::backend::{self, Backend, ClipStats, VectorStats};
use gradcast_core::codec::{self, EncodeParams, EncodeSummary};
use gradcast_core::wire::MessageView;
use gradcast_core::{Classify, CodecError, Error, ErrorKind};

/// A backend whose buffers are borrowed slices (`&'a mut [f32]`), e.g. of static arrays.
///
/// It cannot allocate: [`Backend::alloc`] fails with [`SliceError::NoAllocator`]; the caller
/// owns the storage and lends it as the buffer.
///
/// ```
/// use gradcast_core::Backend;
/// use gradcast_embedded::Slices;
///
/// let mut storage = [0.0f32; 8];
/// let mut residual: &mut [f32] = &mut storage;
/// let backend = Slices::new();
/// backend.fill(&mut residual, 0.5)?;
/// assert_eq!(backend.count(&residual, 0..8, 0.5)?, 8);
/// # Ok::<(), gradcast_embedded::SliceError>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Slices<'a> {
    _buffers: PhantomData<&'a mut [f32]>,
}

impl Slices<'_> {
    /// The backend (it holds no state).
    pub const fn new() -> Self {
        Slices {
            _buffers: PhantomData,
        }
    }
}

/// Errors of [`Slices`]: the core's, or a request to allocate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SliceError {
    /// An error of the core's codec or encoder.
    Core(Error),
    /// [`Backend::alloc`] was called: this backend has no allocator, the caller lends storage.
    NoAllocator {
        /// The element count asked for.
        len: usize,
    },
}

impl From<Error> for SliceError {
    fn from(e: Error) -> Self {
        SliceError::Core(e)
    }
}

impl Classify for SliceError {
    fn kind(&self) -> ErrorKind {
        match self {
            SliceError::Core(e) => e.kind(),
            SliceError::NoAllocator { .. } => ErrorKind::Unsupported,
        }
    }
}

impl fmt::Display for SliceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SliceError::Core(e) => e.fmt(f),
            SliceError::NoAllocator { len } => write!(
                f,
                "the slice backend cannot allocate a vector of {len} elements: lend it a slice"
            ),
        }
    }
}

impl core::error::Error for SliceError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            SliceError::Core(e) => Some(e),
            SliceError::NoAllocator { .. } => None,
        }
    }
}

impl<'a> Backend for Slices<'a> {
    type Buffer = &'a mut [f32];
    type Error = SliceError;

    fn name(&self) -> &str {
        "slices"
    }

    fn alloc(&self, len: usize) -> Result<Self::Buffer, SliceError> {
        Err(SliceError::NoAllocator { len })
    }

    fn len(&self, buf: &Self::Buffer) -> usize {
        buf.len()
    }

    fn upload(&self, src: &[f32], dst: &mut Self::Buffer) -> Result<(), SliceError> {
        backend::check_same_len(dst.len(), src.len())?;
        dst.copy_from_slice(src);
        Ok(())
    }

    fn download(&self, src: &Self::Buffer, dst: &mut [f32]) -> Result<(), SliceError> {
        backend::check_same_len(dst.len(), src.len())?;
        dst.copy_from_slice(src);
        Ok(())
    }

    fn fill(&self, buf: &mut Self::Buffer, value: f32) -> Result<(), SliceError> {
        buf.fill(value);
        Ok(())
    }

    fn count(&self, x: &Self::Buffer, range: Range<usize>, tau: f32) -> Result<u64, SliceError> {
        backend::check_range(&range, x.len())?;
        // The codec reports a non-finite value's index within the slice it is given; report
        // it within the whole vector, as the reference backend does.
        let start = range.start;
        codec::count(&x[range], tau)
            .map(|c| c as u64)
            .map_err(|e| match e {
                Error::Codec(CodecError::NonFinite { index, bits }) => {
                    Error::Codec(CodecError::NonFinite {
                        index: index + start,
                        bits,
                    })
                }
                other => other,
            })
            .map_err(SliceError::from)
    }

    fn encode(
        &self,
        residual: &mut Self::Buffer,
        params: &EncodeParams,
        out: &mut [u8],
    ) -> Result<EncodeSummary, SliceError> {
        Ok(codec::encode(residual, params, out)?)
    }

    fn decode_add(
        &self,
        msg: &MessageView<'_>,
        target: &mut Self::Buffer,
    ) -> Result<(), SliceError> {
        Ok(codec::decode_add(msg, target)?)
    }

    fn add_assign(&self, dst: &mut Self::Buffer, src: &Self::Buffer) -> Result<(), SliceError> {
        backend::check_same_len(dst.len(), src.len())?;
        for (d, s) in dst.iter_mut().zip(src.iter()) {
            *d += *s;
        }
        Ok(())
    }

    fn sub_scaled(
        &self,
        params: &mut Self::Buffer,
        update: &Self::Buffer,
        scale: f32,
    ) -> Result<(), SliceError> {
        backend::check_same_len(params.len(), update.len())?;
        backend::slices::sub_scaled(params, update, scale);
        Ok(())
    }

    fn clip(
        &self,
        buf: &mut Self::Buffer,
        range: Range<usize>,
        limit: f32,
    ) -> Result<ClipStats, SliceError> {
        backend::check_range(&range, buf.len())?;
        Ok(backend::slices::clip(&mut buf[range], limit))
    }

    fn stats(&self, buf: &Self::Buffer, range: Range<usize>) -> Result<VectorStats, SliceError> {
        backend::check_range(&range, buf.len())?;
        Ok(backend::slices::stats(&buf[range]))
    }
}
