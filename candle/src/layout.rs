//! How a model's variables map onto the one vector gradcast shares.
//!
//! Every float variable of a `VarMap`, **ordered by name** (never `HashMap` order, never
//! insertion order), laid end to end: variable `k` occupies `offset..offset + len` of the
//! vector, its elements in row-major order, and is one segment of the encoder (its own
//! threshold state). Two processes that build the same model therefore agree byte for byte,
//! whatever order they created the variables in.

use crate::error::{Error, Result};
use candle_core::{DType, Var};
use candle_nn::VarMap;
use std::collections::HashMap;
use std::fmt::Write as _;

/// One variable of a [`Layout`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variable {
    /// The variable's name in the `VarMap`.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its dtype (gradients travel as f32 whatever it is).
    pub dtype: DType,
    /// Its first element in the shared vector.
    pub offset: usize,
    /// Its element count.
    pub len: usize,
}

impl Variable {
    /// The variable's elements in the shared vector.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len
    }

    fn describe(&self) -> String {
        format!("{:?} {:?}", self.shape, self.dtype)
    }
}

/// The variables of a model in the order gradcast shares them. See the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    vars: Vec<Variable>,
    index: HashMap<String, usize>,
    n: usize,
}

fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
}

impl Layout {
    /// The layout of `varmap`'s float variables (non-float variables are not trained and
    /// not shared, as candle's optimizers skip them).
    ///
    /// # Errors
    /// [`Error::NoVariables`]; [`Error::TooManyParameters`] beyond the wire format's
    /// element limit; [`Error::UnsupportedDtype`] for a float type other than f16, bf16,
    /// f32 and f64.
    pub fn of(varmap: &VarMap) -> Result<Self> {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| Error::Config("the VarMap's lock is poisoned".into()))?;
        let mut named: Vec<(&String, &Var)> =
            data.iter().filter(|(_, v)| v.dtype().is_float()).collect();
        named.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut vars = Vec::with_capacity(named.len());
        let mut offset = 0u64;
        for (name, var) in named {
            let dtype = var.dtype();
            if !is_float(dtype) {
                return Err(Error::UnsupportedDtype {
                    name: name.clone(),
                    dtype,
                });
            }
            let len = var.elem_count();
            vars.push(Variable {
                name: name.clone(),
                shape: var.dims().to_vec(),
                dtype,
                offset: offset as usize,
                len,
            });
            offset += len as u64;
        }
        Self::from_variables_checked(vars, offset)
    }

    fn from_variables_checked(vars: Vec<Variable>, n: u64) -> Result<Self> {
        if vars.is_empty() || n == 0 {
            return Err(Error::NoVariables);
        }
        let max = gradcast_core::wire::MAX_ELEMENTS as u64;
        if n > max {
            return Err(Error::TooManyParameters { n, max });
        }
        let index = vars
            .iter()
            .enumerate()
            .map(|(i, v)| (v.name.clone(), i))
            .collect();
        Ok(Layout {
            vars,
            index,
            n: n as usize,
        })
    }

    /// The variables, ordered by name.
    pub fn variables(&self) -> &[Variable] {
        &self.vars
    }

    /// The number of variables.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// Whether there are no variables (never true for a built layout).
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// N, the length of the shared vector.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The variable called `name`.
    pub fn get(&self, name: &str) -> Option<&Variable> {
        self.index.get(name).map(|&i| &self.vars[i])
    }

    /// The `Var`s of `varmap` in layout order, checked against the layout: every variable
    /// present with its shape and dtype, no float variable more. `worker` (a global id) goes
    /// into the errors.
    ///
    /// # Errors
    /// [`Error::VariableAdded`], [`Error::VariableRemoved`], [`Error::VariableChanged`].
    pub fn vars_of(&self, varmap: &VarMap, worker: usize) -> Result<Vec<Var>> {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| Error::Config("the VarMap's lock is poisoned".into()))?;
        let mut out: Vec<Option<Var>> = vec![None; self.vars.len()];
        for (name, var) in data.iter() {
            if !var.dtype().is_float() {
                continue;
            }
            let Some(&i) = self.index.get(name) else {
                return Err(Error::VariableAdded {
                    name: name.clone(),
                    worker,
                });
            };
            let want = &self.vars[i];
            if var.dims() != want.shape.as_slice() || var.dtype() != want.dtype {
                return Err(Error::VariableChanged {
                    name: name.clone(),
                    worker,
                    expected: want.describe(),
                    found: format!("{:?} {:?}", var.dims(), var.dtype()),
                });
            }
            out[i] = Some(var.clone());
        }
        out.into_iter()
            .zip(&self.vars)
            .map(|(v, want)| {
                v.ok_or_else(|| Error::VariableRemoved {
                    name: want.name.clone(),
                    worker,
                })
            })
            .collect()
    }

    /// Checks that `varmap` still holds exactly `vars` (the same `Var`s, by identity) with
    /// the layout's shapes: what every step does before touching anything.
    ///
    /// # Errors
    /// As [`Layout::vars_of`]; [`Error::VariableChanged`] when a name now holds another
    /// `Var`.
    pub fn check(&self, varmap: &VarMap, vars: &[Var], worker: usize) -> Result<()> {
        let now = self.vars_of(varmap, worker)?;
        for ((a, b), v) in now.iter().zip(vars).zip(&self.vars) {
            if a.as_tensor().id() != b.as_tensor().id() {
                return Err(Error::VariableChanged {
                    name: v.name.clone(),
                    worker,
                    expected: format!("{} (the Var the sharing was set up with)", v.describe()),
                    found: "another Var of that name".into(),
                });
            }
        }
        Ok(())
    }

    /// A canonical byte description (names, shapes, dtypes), the same on every process
    /// that builds the same model: compared across ranks and stored in checkpoints.
    pub fn describe(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.vars.len() as u32).to_le_bytes());
        for v in &self.vars {
            out.extend_from_slice(&(v.name.len() as u32).to_le_bytes());
            out.extend_from_slice(v.name.as_bytes());
            out.push(dtype_code(v.dtype));
            out.push(v.shape.len() as u8);
            for &d in &v.shape {
                out.extend_from_slice(&(d as u64).to_le_bytes());
            }
        }
        out
    }

    /// Parses [`Layout::describe`]'s bytes.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming what is malformed.
    pub fn from_description(bytes: &[u8]) -> Result<Self> {
        let bad = |why: &str| Error::Checkpoint(format!("layout description: {why}"));
        let mut r = Reader { bytes, at: 0 };
        let count = r.u32().ok_or_else(|| bad("truncated"))? as usize;
        if count > bytes.len() {
            return Err(bad("variable count larger than the description"));
        }
        let mut vars = Vec::with_capacity(count);
        let mut offset = 0u64;
        for _ in 0..count {
            let len = r.u32().ok_or_else(|| bad("truncated"))? as usize;
            let name = r.take(len).ok_or_else(|| bad("truncated name"))?;
            let name = std::str::from_utf8(name)
                .map_err(|_| bad("a name is not UTF-8"))?
                .to_string();
            let dtype = dtype_from_code(r.u8().ok_or_else(|| bad("truncated"))?)
                .ok_or_else(|| bad("unknown dtype code"))?;
            let rank = r.u8().ok_or_else(|| bad("truncated"))? as usize;
            let mut shape = Vec::with_capacity(rank);
            let mut elems = 1u64;
            for _ in 0..rank {
                let d = r.u64().ok_or_else(|| bad("truncated shape"))?;
                elems = elems
                    .checked_mul(d)
                    .ok_or_else(|| bad("a shape overflows"))?;
                shape.push(usize::try_from(d).map_err(|_| bad("a dimension overflows"))?);
            }
            if vars.iter().any(|v: &Variable| v.name == name) {
                return Err(bad("a variable name appears twice"));
            }
            if vars.last().is_some_and(|v: &Variable| v.name >= name) {
                return Err(bad("variables are not ordered by name"));
            }
            vars.push(Variable {
                name,
                shape,
                dtype,
                offset: offset as usize,
                len: elems as usize,
            });
            offset = offset
                .checked_add(elems)
                .ok_or_else(|| bad("the element count overflows"))?;
        }
        if r.at != bytes.len() {
            return Err(bad("trailing bytes"));
        }
        Self::from_variables_checked(vars, offset).map_err(|e| match e {
            Error::NoVariables => bad("no variables"),
            other => other,
        })
    }

    /// Where `other` differs from this layout, in words naming the first variable that
    /// differs (`None` when they are equal). `this` and `that` name the two sides.
    pub fn difference(&self, other: &Layout, this: &str, that: &str) -> Option<String> {
        let mut s = String::new();
        for (a, b) in self.vars.iter().zip(&other.vars) {
            if a.name != b.name {
                let (first, owner) = if a.name < b.name {
                    (&a.name, this)
                } else {
                    (&b.name, that)
                };
                let _ = write!(s, "variable `{first}` exists only in {owner}'s model");
                return Some(s);
            }
            if a.shape != b.shape || a.dtype != b.dtype {
                let _ = write!(
                    s,
                    "variable `{}` is {} in {this}'s model and {} in {that}'s",
                    a.name,
                    a.describe(),
                    b.describe()
                );
                return Some(s);
            }
        }
        match self.vars.len().cmp(&other.vars.len()) {
            std::cmp::Ordering::Equal => None,
            std::cmp::Ordering::Greater => Some(format!(
                "variable `{}` exists only in {this}'s model",
                self.vars[other.vars.len()].name
            )),
            std::cmp::Ordering::Less => Some(format!(
                "variable `{}` exists only in {that}'s model",
                other.vars[self.vars.len()].name
            )),
        }
    }
}

fn dtype_code(d: DType) -> u8 {
    match d {
        DType::F16 => 1,
        DType::BF16 => 2,
        DType::F32 => 3,
        DType::F64 => 4,
        _ => 0,
    }
}

fn dtype_from_code(c: u8) -> Option<DType> {
    Some(match c {
        1 => DType::F16,
        2 => DType::BF16,
        3 => DType::F32,
        4 => DType::F64,
        _ => return None,
    })
}

/// A bounds-checked little-endian reader.
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn map(names: &[(&str, &[usize])]) -> VarMap {
        let vm = VarMap::new();
        for (name, shape) in names {
            let _ = vm
                .get(
                    *shape,
                    name,
                    candle_nn::Init::Const(0.5),
                    DType::F32,
                    &Device::Cpu,
                )
                .unwrap();
        }
        vm
    }

    #[test]
    fn variables_are_ordered_by_name_whatever_the_insertion_order() {
        let a = map(&[("b.w", &[2, 3]), ("a.b", &[3]), ("c", &[1])]);
        let b = map(&[("c", &[1]), ("b.w", &[2, 3]), ("a.b", &[3])]);
        let (la, lb) = (Layout::of(&a).unwrap(), Layout::of(&b).unwrap());
        assert_eq!(la, lb);
        assert_eq!(la.describe(), lb.describe());
        let names: Vec<&str> = la.variables().iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["a.b", "b.w", "c"]);
        assert_eq!(la.n(), 10);
        assert_eq!(la.get("b.w").unwrap().range(), 3..9);
        assert_eq!(Layout::from_description(&la.describe()).unwrap(), la);
    }

    #[test]
    fn changes_are_named() {
        let vm = map(&[("x", &[2]), ("y", &[3])]);
        let layout = Layout::of(&vm).unwrap();
        let vars = layout.vars_of(&vm, 0).unwrap();
        layout.check(&vm, &vars, 0).unwrap();
        let _ = vm
            .get(
                4,
                "z",
                candle_nn::Init::Const(0.0),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
        let e = layout.check(&vm, &vars, 3).unwrap_err().to_string();
        assert!(e.contains("worker 3") && e.contains("`z` was added"), "{e}");

        let vm2 = map(&[("x", &[2])]);
        let e = layout.vars_of(&vm2, 1).unwrap_err().to_string();
        assert!(e.contains("`y` was removed"), "{e}");

        let vm3 = map(&[("x", &[2]), ("y", &[4])]);
        let e = layout.vars_of(&vm3, 1).unwrap_err().to_string();
        assert!(e.contains("`y` changed from [3] F32 to [4] F32"), "{e}");

        // A name that now holds another Var.
        let vm4 = map(&[("x", &[2]), ("y", &[3])]);
        let vars4 = layout.vars_of(&vm4, 0).unwrap();
        vm4.data().lock().unwrap().insert(
            "y".into(),
            Var::from_tensor(&Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap()).unwrap(),
        );
        let e = layout.check(&vm4, &vars4, 0).unwrap_err().to_string();
        assert!(e.contains("another Var"), "{e}");
    }

    #[test]
    fn differences_name_the_first_variable() {
        let a = Layout::of(&map(&[("x", &[2]), ("y", &[3])])).unwrap();
        let b = Layout::of(&map(&[("x", &[2]), ("y", &[4])])).unwrap();
        let c = Layout::of(&map(&[("x", &[2])])).unwrap();
        let d = Layout::of(&map(&[("w", &[2]), ("x", &[2]), ("y", &[3])])).unwrap();
        assert_eq!(a.difference(&a, "rank 0", "rank 1"), None);
        let e = a.difference(&b, "rank 0", "rank 1").unwrap();
        assert!(
            e.contains("`y` is [3] F32 in rank 0's model and [4] F32 in rank 1's"),
            "{e}"
        );
        let e = a.difference(&c, "rank 0", "rank 1").unwrap();
        assert!(e.contains("`y` exists only in rank 0's"), "{e}");
        let e = a.difference(&d, "rank 0", "rank 1").unwrap();
        assert!(e.contains("`w` exists only in rank 1's"), "{e}");
    }

    #[test]
    fn bad_descriptions_are_errors() {
        let a = Layout::of(&map(&[("x", &[2]), ("y", &[3])])).unwrap();
        let good = a.describe();
        for cut in 0..good.len() {
            assert!(Layout::from_description(&good[..cut]).is_err(), "cut {cut}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(Layout::from_description(&long).is_err());
        assert!(Layout::from_description(&[255, 255, 255, 255]).is_err());
        assert!(matches!(
            Layout::of(&VarMap::new()),
            Err(Error::NoVariables)
        ));
    }
}
