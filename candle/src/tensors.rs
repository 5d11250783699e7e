//! Moving values between candle tensors and the flat f32 vector gradcast shares.

use crate::error::{Error, Result};
use crate::layout::Layout;
use candle_core::backprop::GradStore;
use candle_core::{DType, Storage, Tensor, Var};

/// Copies `t`'s values, row-major, as f32 into `out` (`t.elem_count()` values). A
/// contiguous f32 tensor on the CPU is copied straight from its storage; anything else goes
/// through candle's conversions.
pub(crate) fn copy_into(t: &Tensor, out: &mut [f32]) -> Result<()> {
    if t.dtype() == DType::F32 {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            let src = cpu.as_slice::<f32>()?;
            if let Some(src) = src.get(start..end)
                && src.len() == out.len()
            {
                out.copy_from_slice(src);
                return Ok(());
            }
        }
    }
    let v = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    if v.len() != out.len() {
        return Err(Error::Count {
            what: "tensor elements",
            expected: out.len(),
            got: v.len(),
        });
    }
    out.copy_from_slice(&v);
    Ok(())
}

/// A tensor of `var`'s shape, dtype and device holding `values`.
pub(crate) fn tensor_like(var: &Var, values: &[f32]) -> Result<Tensor> {
    let t = Tensor::from_slice(values, var.shape(), &candle_core::Device::Cpu)?;
    let t = if var.dtype() == DType::F32 {
        t
    } else {
        t.to_dtype(var.dtype())?
    };
    Ok(if var.device().is_cpu() {
        t
    } else {
        t.to_device(var.device())?
    })
}

/// The first non-finite value of `values`, as `(index, value)`.
pub(crate) fn first_non_finite(values: &[f32]) -> Option<(usize, f32)> {
    values
        .iter()
        .position(|v| !v.is_finite())
        .map(|i| (i, values[i]))
}

/// Writes every variable's gradient from `grads` into `out` (N values, layout order) and
/// returns how many variables had no gradient (their elements are 0).
///
/// # Errors
/// [`Error::GradientShape`], [`Error::NonFinite`] naming the variable; candle errors.
/// `out` may be partly written on error.
pub(crate) fn flatten_grads(
    layout: &Layout,
    vars: &[Var],
    grads: &GradStore,
    out: &mut [f32],
    worker: usize,
) -> Result<usize> {
    let mut missing = 0;
    for (v, var) in layout.variables().iter().zip(vars) {
        let dst = &mut out[v.range()];
        match grads.get(var.as_tensor()) {
            None => {
                dst.fill(0.0);
                missing += 1;
            }
            Some(g) => {
                if g.dims() != v.shape.as_slice() {
                    return Err(Error::GradientShape {
                        name: v.name.clone(),
                        worker,
                        expected: v.shape.clone(),
                        found: g.dims().to_vec(),
                    });
                }
                copy_into(g, dst)?;
                if let Some((index, value)) = first_non_finite(dst) {
                    return Err(Error::NonFinite {
                        what: "gradient",
                        name: v.name.clone(),
                        worker,
                        index,
                        value,
                    });
                }
            }
        }
    }
    Ok(missing)
}

/// Writes every variable's current value into `out` (N values, layout order), as f32.
pub(crate) fn flatten_vars(layout: &Layout, vars: &[Var], out: &mut [f32]) -> Result<()> {
    for (v, var) in layout.variables().iter().zip(vars) {
        copy_into(var.as_tensor(), &mut out[v.range()])?;
    }
    Ok(())
}

/// Every variable's values converted exactly to f64 (f16, bf16, f32 and f64 all convert
/// without loss), layout order.
pub(crate) fn vars_as_f64(vars: &[Var]) -> Result<Vec<Vec<f64>>> {
    vars.iter()
        .map(|v| {
            Ok(v.as_tensor()
                .flatten_all()?
                .to_dtype(DType::F64)?
                .to_vec1::<f64>()?)
        })
        .collect()
}

/// Sets every variable from f64 values (converted back to its dtype, exactly when they came
/// from [`vars_as_f64`] of a variable of the same dtype).
pub(crate) fn set_vars_f64(vars: &[Var], values: &[Vec<f64>]) -> Result<()> {
    for (var, v) in vars.iter().zip(values) {
        let t = Tensor::from_slice(v, var.shape(), &candle_core::Device::Cpu)?
            .to_dtype(var.dtype())?
            .to_device(var.device())?;
        var.set(&t)?;
    }
    Ok(())
}

/// FNV-1a (64 bits) over the exact bits of `values`.
pub(crate) fn checksum_f64(values: &[f64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in values {
        for b in v.to_bits().to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// FNV-1a (64 bits) over the exact bits of every variable's values (as f32, layout order):
/// equal checksums mean bit-identical f32 replicas (up to a 2^-64 chance).
///
/// # Errors
/// candle errors.
pub fn params_checksum(layout: &Layout, vars: &[Var]) -> Result<u64> {
    let mut flat = vec![0f32; layout.n()];
    flatten_vars(layout, vars, &mut flat)?;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in &flat {
        for b in v.to_bits().to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    Ok(h)
}
