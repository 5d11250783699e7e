//! The crate's one error type: every failure names what it is about (the variable, the
//! worker, the rank, the file) and says what is wrong.

use gradcast_core::ErrorKind;
use std::path::PathBuf;

/// Everything that can go wrong while sharing gradients.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// candle failed (a tensor operation, the model, the optimizer).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),

    /// The model has no float variables to share.
    #[error("the model has no float variables to share")]
    NoVariables,

    /// More variables than the encoder's segment capacity (one segment per variable).
    #[error(
        "the model has {count} float variables, more than the {max} segments an encoder holds \
         (one per variable); use `Segments::Whole`"
    )]
    TooManyVariables {
        /// Variables in the model.
        count: usize,
        /// The capacity.
        max: usize,
    },

    /// More parameters than a gradcast message can describe.
    #[error("the model has {n} parameters, more than the {max} a gradcast message describes")]
    TooManyParameters {
        /// Parameters in the model.
        n: u64,
        /// The wire format's limit.
        max: u64,
    },

    /// A variable of a type that cannot be shared (a float type candle cannot convert).
    #[error("variable `{name}` has dtype {dtype:?}, which cannot be shared")]
    UnsupportedDtype {
        /// The variable.
        name: String,
        /// Its dtype.
        dtype: candle_core::DType,
    },

    /// A variable appeared in a worker's `VarMap` after the layout was fixed.
    #[error("worker {worker}: variable `{name}` was added after the sharing was set up")]
    VariableAdded {
        /// The variable.
        name: String,
        /// The global worker id.
        worker: usize,
    },

    /// A variable of the layout is gone from a worker's `VarMap`.
    #[error("worker {worker}: variable `{name}` was removed after the sharing was set up")]
    VariableRemoved {
        /// The variable.
        name: String,
        /// The global worker id.
        worker: usize,
    },

    /// A variable changed shape (or dtype, or was replaced by another `Var`).
    #[error("worker {worker}: variable `{name}` changed from {expected} to {found}")]
    VariableChanged {
        /// The variable.
        name: String,
        /// The global worker id.
        worker: usize,
        /// What the layout holds (shape and dtype).
        expected: String,
        /// What the worker's `VarMap` holds now.
        found: String,
    },

    /// A gradient (or update) holds NaN or an infinity.
    #[error("worker {worker}: the {what} of variable `{name}` holds {value} at element {index}")]
    NonFinite {
        /// `"gradient"` or `"update"`.
        what: &'static str,
        /// The variable.
        name: String,
        /// The global worker id.
        worker: usize,
        /// The element within the variable (flattened, row-major).
        index: usize,
        /// The value.
        value: f32,
    },

    /// A gradient has another shape than its variable.
    #[error(
        "worker {worker}: the gradient of `{name}` has shape {found:?}, the variable {expected:?}"
    )]
    GradientShape {
        /// The variable.
        name: String,
        /// The global worker id.
        worker: usize,
        /// The variable's shape.
        expected: Vec<usize>,
        /// The gradient's shape.
        found: Vec<usize>,
    },

    /// Two workers' models differ (in this process or on another rank).
    #[error("the models differ: {detail}")]
    ModelsDiffer {
        /// Which variable differs where, and how.
        detail: String,
    },

    /// At the start, a worker's parameters differ from global worker 0's (`Init::Verify`).
    #[error(
        "worker {worker}: variable `{name}` differs from worker 0's at the start \
         (build every replica from the same seed, or use Init::Broadcast)"
    )]
    ParametersDiffer {
        /// The first variable that differs.
        name: String,
        /// The global worker id.
        worker: usize,
    },

    /// A call does not fit the sharing's shape (the number of gradient stores or optimizers).
    #[error("{what}: expected {expected}, got {got}")]
    Count {
        /// What was counted.
        what: &'static str,
        /// The expected number.
        expected: usize,
        /// The number given.
        got: usize,
    },

    /// A configuration value out of its domain.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The round protocol failed (encoding, validation, the exchange).
    #[error("step {step}: {message}")]
    Round {
        /// The step.
        step: u64,
        /// The core's classification of the failure.
        kind: ErrorKind,
        /// What went wrong.
        message: String,
    },

    /// The network between processes failed (an MPI call, say).
    #[error("network: {message}")]
    Network {
        /// The classification of the failure.
        kind: ErrorKind,
        /// What went wrong.
        message: String,
    },

    /// A checkpoint is not valid, or does not fit this sharing.
    #[error("checkpoint: {0}")]
    Checkpoint(String),

    /// A job checkpoint was written for another run: the first configuration field that
    /// differs, with the checkpoint's value and this run's.
    #[error(
        "checkpoint: written for another configuration: {field} is {saved} in the checkpoint, \
         {current} in this run"
    )]
    CheckpointMismatch {
        /// The field (`batch`, `seed`, `run 1 exchange`, ...).
        field: String,
        /// Its value in the checkpoint.
        saved: String,
        /// Its value in the run being resumed.
        current: String,
    },

    /// No job checkpoint to resume from: the directory holds none that is valid for this
    /// rank, or the ranks hold no round in common.
    #[error("checkpoint: nothing to resume in {}: {why}", dir.display())]
    NoCheckpoint {
        /// The checkpoint directory.
        dir: PathBuf,
        /// Why (the files found and what is wrong with them).
        why: String,
    },

    /// A file could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// The training driver failed (the loss diverged, the data do not fit the model).
    #[error("training: {0}")]
    Train(String),
}

impl Error {
    /// A [`Error::Round`] from any displayable core-classified error.
    pub(crate) fn round<E: gradcast_core::Classify + std::fmt::Display>(step: u64, e: E) -> Self {
        Error::Round {
            step,
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    /// A [`Error::Network`] from any displayable core-classified error.
    pub fn network<E: gradcast_core::Classify + std::fmt::Display>(e: E) -> Self {
        Error::Network {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
