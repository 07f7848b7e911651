//! Optimizers with Keras 3's exact update rules, as fused, allocation-free kernels.
//!
//! Each optimizer reproduces `keras/src/optimizers/<name>.py` and the shared steps of
//! `base_optimizer.py` operation for operation, in float32, in Keras's order. One call of
//! [`apply_gradients`] is one Keras `optimizer.apply(grads, vars)`:
//!
//! 1. clip the gradients: `clipnorm` (each variable's gradient by its own L2 norm),
//!    `global_clipnorm` (all gradients by their joint norm) or `clipvalue`; at most one is set,
//!    and a value of 0 disables it, as in Keras;
//! 2. weight decay, when `weight_decay` is set: `w <- w - w * weight_decay * lr`;
//! 3. the optimizer's `update_step`, with `local_step = iterations + 1`;
//! 4. `iterations += 1`.
//!
//! # Numerics
//!
//! Keras computes in the variable's dtype. A hyper-parameter reaches the float32 math in one of
//! two ways, and both are reproduced:
//! - cast first, then arithmetic in float32 (`beta_1 = ops.cast(self.beta_1, dtype)` and then
//!   `1 - beta_1`, as in Nadam; `ops.power(beta, local_step)` everywhere);
//! - arithmetic on the Python double first, then one rounding (`1 - self.beta_1` in Adam and
//!   Adamax, `1 - rho` in RMSprop and Adadelta). The double is recovered from the stored f32 by
//!   `py_float`, so these constants are bit-identical to Keras's.
//!
//! Powers `beta ** local_step` are computed in f64 and rounded once, which is the correctly rounded
//! float32 power. Per-element expressions keep Keras's operand order and never fuse a multiply and
//! an add, so each element sees the same sequence of float32 roundings as in Keras.
//!
//! # Parallelism and determinism
//!
//! The update is elementwise, so its result does not depend on how the work is split: variables
//! are grouped and large ones cut into chunks of `CHUNK` elements, and the pieces run in parallel
//! with [`par::join`]. The one reduction, the sum of squares behind `clipnorm` and
//! `global_clipnorm`, is accumulated in f64 over a split that depends only on the length.
//! Nothing here allocates on the heap after validation (a [`RowSums`] reserves its buffers when
//! built and on its first step); small steps never touch the thread pool.
//!
//! # Gathered tables
//!
//! An embedding table's gradient is zero but in the rows the batch gathered. It reaches
//! [`apply_gradients`] as [`Gradient::Rows`]: those rows' sums only, written out a thousand
//! elements at a time into a buffer on the stack, next to the update that reads them. The result
//! is bitwise the dense one's. (Clipping by a norm writes the whole gradient out once more, for
//! the sum of squares.)
//!
//! Where a zero gradient only scales a slot array (plain SGD, RMSprop without momentum and not
//! centered, Adagrad; no weight decay), the rows a step did not gather can have their updates put
//! off over several steps ([`RowSums::defer_updates`]): each step then updates the gathered rows
//! only, after replaying the zero-gradient steps each of them missed, and [`settle_rows`] replays
//! the rest at the end. The replay performs each missed step's operations on each element, so
//! the weights and slots are bitwise those of updating every row at every step. In between, a
//! step's forward pass reads a row that is behind: with the slots >= 0 (checked) and a normal
//! epsilon, a zero-gradient step leaves the weight as it is but for flushing a subnormal one to
//! zero, and the arithmetic reading it flushes it too. What is saved is streaming the whole
//! table and its slots through memory at each step (clipping by a norm still writes the whole
//! gradient out once, for its sum of squares).

use std::fmt::Write as _;

use pyfuncnet_kernels::cpu::{self, SimdBody};
use pyfuncnet_kernels::{par, reduce};
use serde_json::{Map, Value};

/// Elements per piece of parallel work: about 20-60 us of update work, far above the cost of
/// handing a task to another thread. Results never depend on it.
const CHUNK: usize = 1 << 15;

/// Elements of a [`RowSums`] gradient written out at a time, into a buffer on the stack (a
/// multiple of 4, for [`SquareSum`]); also the most elements of rows that were not gathered
/// that one update call takes.
const WRITTEN_OUT: usize = 1024;

/// The most slot arrays any optimizer keeps per variable (Adam with AMSGrad, centered RMSprop
/// with momentum).
const MAX_SLOTS: usize = 3;

/// The optimizer string ids, as Keras's `keras.optimizers.get` accepts them.
pub const OPTIMIZER_NAMES: [&str; 8] = [
    "sgd", "rmsprop", "adam", "adamw", "adagrad", "adadelta", "adamax", "nadam",
];

/// Keys every Keras 3 optimizer config may hold (`BaseOptimizer.get_config`), plus the legacy
/// `decay` that Keras 3 still accepts and ignores.
const BASE_KEYS: [&str; 12] = [
    "name",
    "learning_rate",
    "weight_decay",
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
    "loss_scale_factor",
    "gradient_accumulation_steps",
    "decay",
];

/// Which optimizer, with its own hyper-parameters (Keras 3 argument names and defaults).
///
/// Slot arrays per variable, in Keras's creation order (the names are [`OptimizerConfig::slot_names`]):
/// - `Sgd`: `momentum` when `momentum != 0`, else none;
/// - `RmsProp`: `velocity`, then `momentum` when `momentum > 0`, then `average_gradient` when
///   `centered`;
/// - `Adam` / `AdamW`: `momentum`, `velocity`, then `velocity_hat` when `amsgrad`;
/// - `Adagrad`: `accumulator` (starts at `initial_accumulator_value`);
/// - `Adadelta`: `accumulated_grad`, `accumulated_delta_var`;
/// - `Adamax`: `momentum`, `norm`;
/// - `Nadam`: `momentum`, `velocity`, plus one scalar, `u_product` (starts at 1).
#[derive(Clone, Debug, PartialEq)]
pub enum OptimizerKind {
    Sgd {
        momentum: f32,
        nesterov: bool,
    },
    RmsProp {
        rho: f32,
        momentum: f32,
        epsilon: f32,
        centered: bool,
    },
    Adam {
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
        amsgrad: bool,
    },
    AdamW {
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
        amsgrad: bool,
    },
    Adagrad {
        initial_accumulator_value: f32,
        epsilon: f32,
    },
    Adadelta {
        rho: f32,
        epsilon: f32,
    },
    Adamax {
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
    },
    Nadam {
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
    },
}

impl OptimizerKind {
    /// The Keras string id (`"adam"`, `"rmsprop"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sgd { .. } => "sgd",
            Self::RmsProp { .. } => "rmsprop",
            Self::Adam { .. } => "adam",
            Self::AdamW { .. } => "adamw",
            Self::Adagrad { .. } => "adagrad",
            Self::Adadelta { .. } => "adadelta",
            Self::Adamax { .. } => "adamax",
            Self::Nadam { .. } => "nadam",
        }
    }

    /// Keras 3's default `learning_rate` for this optimizer (0.01 for SGD, 0.001 otherwise).
    pub fn default_learning_rate(&self) -> f32 {
        match self {
            Self::Sgd { .. } => 0.01,
            _ => 0.001,
        }
    }
}

/// An optimizer's configuration: the kind plus the options every Keras 3 optimizer shares.
/// The learning rate is not part of it: it is passed to every step.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub weight_decay: Option<f32>,
    pub clipnorm: Option<f32>,
    pub clipvalue: Option<f32>,
    pub global_clipnorm: Option<f32>,
}

impl OptimizerConfig {
    /// Parses a Keras 3 optimizer config, e.g.
    /// `{"name": "adam", "beta_1": 0.9, ..., "weight_decay": null, "clipnorm": null, ...}`.
    ///
    /// `name` is one of [`OPTIMIZER_NAMES`] (case-insensitive, so Keras class names such as
    /// `"RMSprop"` work too). Missing keys take Keras 3's defaults (`adamw` defaults to
    /// `weight_decay = 0.004`). The other keys of Keras's `get_config` are accepted:
    /// `learning_rate` is ignored (it is passed per step), `ema_momentum` and
    /// `ema_overwrite_frequency` are ignored, `use_ema` must be false and `loss_scale_factor`
    /// and `gradient_accumulation_steps` null (not supported), the legacy `decay` must be null
    /// or 0.
    ///
    /// # Errors
    /// A message naming the argument, the expected and the given value, when: the value is not an
    /// object; `name` is missing or unknown; a key is unknown to that optimizer; a value has the
    /// wrong type; or [`validate`](Self::validate) fails.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let obj = value
            .as_object()
            .ok_or_else(|| format!("optimizer config: expected a JSON object, got {value}"))?;
        let name = match obj.get("name") {
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                return Err(format!(
                    "optimizer config: `name` must be a string, got {other}"
                ));
            }
            None => {
                return Err(format!(
                    "optimizer config: missing `name`; expected one of {}",
                    OPTIMIZER_NAMES.join(", ")
                ));
            }
        };
        let lower = name.to_ascii_lowercase();
        let id = OPTIMIZER_NAMES
            .iter()
            .copied()
            .find(|n| *n == lower)
            .ok_or_else(|| {
                format!(
                    "optimizer config: unknown optimizer name `{name}`; expected one of {}",
                    OPTIMIZER_NAMES.join(", ")
                )
            })?;
        let own = own_keys(id);
        for key in obj.keys() {
            if !BASE_KEYS.contains(&key.as_str()) && !own.contains(&key.as_str()) {
                let mut allowed: Vec<&str> = own.to_vec();
                allowed.extend(BASE_KEYS.iter().filter(|k| **k != "decay"));
                return Err(format!(
                    "{id}: unknown argument `{key}`; expected one of {}",
                    allowed.join(", ")
                ));
            }
        }
        let args = Args { id, obj };
        args.check_unsupported()?;

        let kind = match id {
            "sgd" => OptimizerKind::Sgd {
                momentum: args.number("momentum", 0.0)?,
                nesterov: args.boolean("nesterov", false)?,
            },
            "rmsprop" => OptimizerKind::RmsProp {
                rho: args.number("rho", 0.9)?,
                momentum: args.number("momentum", 0.0)?,
                epsilon: args.number("epsilon", 1e-7)?,
                centered: args.boolean("centered", false)?,
            },
            "adam" | "adamw" => {
                let (beta_1, beta_2) = (args.number("beta_1", 0.9)?, args.number("beta_2", 0.999)?);
                let epsilon = args.number("epsilon", 1e-7)?;
                let amsgrad = args.boolean("amsgrad", false)?;
                if id == "adam" {
                    OptimizerKind::Adam {
                        beta_1,
                        beta_2,
                        epsilon,
                        amsgrad,
                    }
                } else {
                    OptimizerKind::AdamW {
                        beta_1,
                        beta_2,
                        epsilon,
                        amsgrad,
                    }
                }
            }
            "adagrad" => OptimizerKind::Adagrad {
                initial_accumulator_value: args.number("initial_accumulator_value", 0.1)?,
                epsilon: args.number("epsilon", 1e-7)?,
            },
            "adadelta" => OptimizerKind::Adadelta {
                rho: args.number("rho", 0.95)?,
                epsilon: args.number("epsilon", 1e-7)?,
            },
            "adamax" => OptimizerKind::Adamax {
                beta_1: args.number("beta_1", 0.9)?,
                beta_2: args.number("beta_2", 0.999)?,
                epsilon: args.number("epsilon", 1e-7)?,
            },
            _ => OptimizerKind::Nadam {
                beta_1: args.number("beta_1", 0.9)?,
                beta_2: args.number("beta_2", 0.999)?,
                epsilon: args.number("epsilon", 1e-7)?,
            },
        };
        let default_decay = if id == "adamw" { Some(0.004) } else { None };
        let config = OptimizerConfig {
            kind,
            weight_decay: args.optional("weight_decay", default_decay)?,
            clipnorm: args.optional("clipnorm", None)?,
            clipvalue: args.optional("clipvalue", None)?,
            global_clipnorm: args.optional("global_clipnorm", None)?,
        };
        config.validate()?;
        Ok(config)
    }

    /// The config as Keras's `get_config` writes it, without `learning_rate` and the EMA /
    /// loss-scale / accumulation keys. Floats are written as the decimal they were given in
    /// (0.9, not 0.8999999761581421).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), Value::from(self.kind.name()));
        let num = |x: f32| Value::from(py_float(x));
        match self.kind {
            OptimizerKind::Sgd { momentum, nesterov } => {
                m.insert("momentum".into(), num(momentum));
                m.insert("nesterov".into(), Value::from(nesterov));
            }
            OptimizerKind::RmsProp {
                rho,
                momentum,
                epsilon,
                centered,
            } => {
                m.insert("rho".into(), num(rho));
                m.insert("momentum".into(), num(momentum));
                m.insert("epsilon".into(), num(epsilon));
                m.insert("centered".into(), Value::from(centered));
            }
            OptimizerKind::Adam {
                beta_1,
                beta_2,
                epsilon,
                amsgrad,
            }
            | OptimizerKind::AdamW {
                beta_1,
                beta_2,
                epsilon,
                amsgrad,
            } => {
                m.insert("beta_1".into(), num(beta_1));
                m.insert("beta_2".into(), num(beta_2));
                m.insert("epsilon".into(), num(epsilon));
                m.insert("amsgrad".into(), Value::from(amsgrad));
            }
            OptimizerKind::Adagrad {
                initial_accumulator_value,
                epsilon,
            } => {
                m.insert(
                    "initial_accumulator_value".into(),
                    num(initial_accumulator_value),
                );
                m.insert("epsilon".into(), num(epsilon));
            }
            OptimizerKind::Adadelta { rho, epsilon } => {
                m.insert("rho".into(), num(rho));
                m.insert("epsilon".into(), num(epsilon));
            }
            OptimizerKind::Adamax {
                beta_1,
                beta_2,
                epsilon,
            }
            | OptimizerKind::Nadam {
                beta_1,
                beta_2,
                epsilon,
            } => {
                m.insert("beta_1".into(), num(beta_1));
                m.insert("beta_2".into(), num(beta_2));
                m.insert("epsilon".into(), num(epsilon));
            }
        }
        let opt = |x: Option<f32>| x.map_or(Value::Null, num);
        m.insert("weight_decay".into(), opt(self.weight_decay));
        m.insert("clipnorm".into(), opt(self.clipnorm));
        m.insert("global_clipnorm".into(), opt(self.global_clipnorm));
        m.insert("clipvalue".into(), opt(self.clipvalue));
        Value::Object(m)
    }

    /// Checks every value: `rho`, `beta_1`, `beta_2` and `momentum` in [0, 1]; `epsilon`,
    /// `initial_accumulator_value`, `weight_decay` and the clip values finite and >= 0; at most
    /// one of `clipnorm`, `clipvalue`, `global_clipnorm` set (Keras's rule: a value of 0 counts as
    /// set); AdamW has a `weight_decay` (Keras raises otherwise).
    ///
    /// # Errors
    /// A message naming the first offending argument, what was expected and what was given.
    pub fn validate(&self) -> Result<(), String> {
        let id = self.kind.name();
        let unit = |key: &str, x: f32| {
            if (0.0..=1.0).contains(&x) {
                Ok(())
            } else {
                Err(format!("{id}: `{key}` must be a float in [0, 1], got {x}"))
            }
        };
        let non_negative = |key: &str, x: f32| {
            if x >= 0.0 && x.is_finite() {
                Ok(())
            } else {
                Err(format!(
                    "{id}: `{key}` must be a finite float >= 0, got {x}"
                ))
            }
        };
        match self.kind {
            OptimizerKind::Sgd { momentum, .. } => unit("momentum", momentum)?,
            OptimizerKind::RmsProp {
                rho,
                momentum,
                epsilon,
                ..
            } => {
                unit("rho", rho)?;
                unit("momentum", momentum)?;
                non_negative("epsilon", epsilon)?;
            }
            OptimizerKind::Adam {
                beta_1,
                beta_2,
                epsilon,
                ..
            }
            | OptimizerKind::AdamW {
                beta_1,
                beta_2,
                epsilon,
                ..
            }
            | OptimizerKind::Adamax {
                beta_1,
                beta_2,
                epsilon,
            }
            | OptimizerKind::Nadam {
                beta_1,
                beta_2,
                epsilon,
            } => {
                unit("beta_1", beta_1)?;
                unit("beta_2", beta_2)?;
                non_negative("epsilon", epsilon)?;
            }
            OptimizerKind::Adagrad {
                initial_accumulator_value,
                epsilon,
            } => {
                non_negative("initial_accumulator_value", initial_accumulator_value)?;
                non_negative("epsilon", epsilon)?;
            }
            OptimizerKind::Adadelta { rho, epsilon } => {
                unit("rho", rho)?;
                non_negative("epsilon", epsilon)?;
            }
        }
        if matches!(self.kind, OptimizerKind::AdamW { .. }) && self.weight_decay.is_none() {
            return Err(format!("{id}: `weight_decay` must be a float, got None"));
        }
        let optional = [
            ("weight_decay", self.weight_decay),
            ("clipnorm", self.clipnorm),
            ("clipvalue", self.clipvalue),
            ("global_clipnorm", self.global_clipnorm),
        ];
        for (key, value) in optional {
            if let Some(x) = value {
                non_negative(key, x)?;
            }
        }
        let clips = [self.clipnorm, self.clipvalue, self.global_clipnorm];
        if clips.iter().filter(|c| c.is_some()).count() > 1 {
            let show = |x: Option<f32>| x.map_or_else(|| "None".to_string(), |v| v.to_string());
            return Err(format!(
                "{id}: only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set, got \
                 clipnorm={}, clipvalue={}, global_clipnorm={}",
                show(self.clipnorm),
                show(self.clipvalue),
                show(self.global_clipnorm)
            ));
        }
        Ok(())
    }

    /// Whether steps with this config may put off the updates of the rows of a table that they
    /// did not gather ([`RowSums::defer_updates`]): plain SGD, RMSprop without momentum and not
    /// centered (rho and epsilon normal numbers), Adagrad (epsilon a normal number), each
    /// without weight decay. A step still updates every row when it gathers more than one in
    /// eight of them, its learning rate is not finite or not >= +0, clipping leaves the
    /// other rows' gradient nonzero, or a velocity or accumulator was negative or NaN when the
    /// call began.
    pub fn may_put_off_updates(&self) -> bool {
        let normal = |x: f32| x >= f32::MIN_POSITIVE && x.is_finite();
        self.weight_decay.is_none()
            && match self.kind {
                OptimizerKind::Sgd { momentum, .. } => momentum == 0.0,
                OptimizerKind::RmsProp {
                    rho,
                    momentum,
                    epsilon,
                    centered,
                } => momentum <= 0.0 && !centered && normal(rho) && normal(epsilon),
                OptimizerKind::Adagrad { epsilon, .. } => normal(epsilon),
                _ => false,
            }
    }

    /// Number of per-element slot arrays each variable needs (Adam 2, Adam with AMSGrad 3,
    /// SGD with momentum 1 and without 0, ...). Their order is [`slot_names`](Self::slot_names).
    pub fn slots_per_variable(&self) -> usize {
        match self.kind {
            OptimizerKind::Sgd { momentum, .. } => usize::from(momentum != 0.0),
            OptimizerKind::RmsProp {
                momentum, centered, ..
            } => 1 + usize::from(momentum > 0.0) + usize::from(centered),
            OptimizerKind::Adam { amsgrad, .. } | OptimizerKind::AdamW { amsgrad, .. } => {
                2 + usize::from(amsgrad)
            }
            OptimizerKind::Adagrad { .. } => 1,
            OptimizerKind::Adadelta { .. } | OptimizerKind::Adamax { .. } => 2,
            OptimizerKind::Nadam { .. } => 2,
        }
    }

    /// Keras's names of the slot arrays (the suffix of its optimizer variable names), in slot order.
    pub fn slot_names(&self) -> Vec<&'static str> {
        let mut names = Vec::with_capacity(MAX_SLOTS);
        match self.kind {
            OptimizerKind::Sgd { momentum, .. } => {
                if momentum != 0.0 {
                    names.push("momentum");
                }
            }
            OptimizerKind::RmsProp {
                momentum, centered, ..
            } => {
                names.push("velocity");
                if momentum > 0.0 {
                    names.push("momentum");
                }
                if centered {
                    names.push("average_gradient");
                }
            }
            OptimizerKind::Adam { amsgrad, .. } | OptimizerKind::AdamW { amsgrad, .. } => {
                names.extend(["momentum", "velocity"]);
                if amsgrad {
                    names.push("velocity_hat");
                }
            }
            OptimizerKind::Adagrad { .. } => names.push("accumulator"),
            OptimizerKind::Adadelta { .. } => {
                names.extend(["accumulated_grad", "accumulated_delta_var"]);
            }
            OptimizerKind::Adamax { .. } => names.extend(["momentum", "norm"]),
            OptimizerKind::Nadam { .. } => names.extend(["momentum", "velocity"]),
        }
        names
    }

    /// Initial value of every slot array: Adagrad's accumulator starts at
    /// `initial_accumulator_value`, every other slot at 0.
    pub fn slot_initial_values(&self) -> Vec<f32> {
        match self.kind {
            OptimizerKind::Adagrad {
                initial_accumulator_value,
                ..
            } => {
                vec![initial_accumulator_value]
            }
            _ => vec![0.0; self.slots_per_variable()],
        }
    }

    /// Number of scalar states per variable: 1 for Nadam (`u_product`), 0 otherwise.
    pub fn scalars_per_variable(&self) -> usize {
        usize::from(matches!(self.kind, OptimizerKind::Nadam { .. }))
    }

    /// Initial values of the scalar states: Nadam's `u_product` starts at 1.
    pub fn scalar_initial_values(&self) -> Vec<f64> {
        vec![1.0; self.scalars_per_variable()]
    }
}

/// The optimizer-specific keys of a Keras 3 config.
fn own_keys(id: &str) -> &'static [&'static str] {
    match id {
        "sgd" => &["momentum", "nesterov"],
        "rmsprop" => &["rho", "momentum", "epsilon", "centered"],
        "adam" | "adamw" => &["beta_1", "beta_2", "epsilon", "amsgrad"],
        "adagrad" => &["initial_accumulator_value", "epsilon"],
        "adadelta" => &["rho", "epsilon"],
        _ => &["beta_1", "beta_2", "epsilon"],
    }
}

/// Typed reads of one optimizer config object, with messages that name the optimizer and key.
struct Args<'a> {
    id: &'static str,
    obj: &'a Map<String, Value>,
}

impl Args<'_> {
    fn to_f32(&self, key: &str, v: &Value) -> Result<f32, String> {
        let id = self.id;
        let x = v
            .as_f64()
            .ok_or_else(|| format!("{id}: `{key}` must be a number, got {v}"))?;
        let y = x as f32;
        if y.is_finite() {
            Ok(y)
        } else {
            Err(format!(
                "{id}: `{key}` must be a finite float32 number, got {v}"
            ))
        }
    }

    fn number(&self, key: &str, default: f32) -> Result<f32, String> {
        self.obj
            .get(key)
            .map_or(Ok(default), |v| self.to_f32(key, v))
    }

    fn optional(&self, key: &str, default: Option<f32>) -> Result<Option<f32>, String> {
        match self.obj.get(key) {
            None => Ok(default),
            Some(Value::Null) => Ok(None),
            Some(v) => self.to_f32(key, v).map(Some),
        }
    }

    fn boolean(&self, key: &str, default: bool) -> Result<bool, String> {
        match self.obj.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(format!(
                "{}: `{key}` must be true or false, got {v}",
                self.id
            )),
        }
    }

    /// Refuses the Keras options this module does not implement, accepting their inert values.
    fn check_unsupported(&self) -> Result<(), String> {
        let id = self.id;
        match self.obj.get("use_ema") {
            None | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) => {
                return Err(format!(
                    "{id}: `use_ema=True` is not supported; expected false"
                ));
            }
            Some(v) => return Err(format!("{id}: `use_ema` must be true or false, got {v}")),
        }
        for key in ["ema_momentum", "ema_overwrite_frequency"] {
            match self.obj.get(key) {
                None | Some(Value::Null) | Some(Value::Number(_)) => {}
                Some(v) => return Err(format!("{id}: `{key}` must be a number or null, got {v}")),
            }
        }
        for key in ["loss_scale_factor", "gradient_accumulation_steps"] {
            match self.obj.get(key) {
                None | Some(Value::Null) => {}
                Some(v) => {
                    return Err(format!(
                        "{id}: `{key}` is not supported; expected null, got {v}"
                    ));
                }
            }
        }
        match self.obj.get("decay") {
            None | Some(Value::Null) => {}
            Some(v) if v.as_f64() == Some(0.0) => {}
            Some(v) => {
                return Err(format!(
                    "{id}: `decay` is not supported by Keras 3 optimizers (use a learning-rate \
                     schedule); expected null or 0, got {v}"
                ));
            }
        }
        Ok(())
    }
}

/// One variable's optimizer state: its slot arrays (each as long as the variable, in the order of
/// [`OptimizerConfig::slot_names`]) and its scalar states.
///
/// Nadam's scalar is Keras's `u_product`. Keras keeps one per optimizer, updated once per step;
/// here every variable holds a copy and [`apply_gradients`] keeps all copies equal (it reads the
/// first, writes all), so saving can take `variables[0].scalars[0]`.
#[derive(Clone, Debug, PartialEq)]
pub struct VariableState {
    pub slots: Vec<Vec<f32>>,
    pub scalars: Vec<f64>,
}

/// The state of an optimizer over a fixed list of trainable variables. `iterations` is Keras's
/// `optimizer.iterations`: the number of steps applied so far.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState {
    pub iterations: u64,
    pub variables: Vec<VariableState>,
}

impl OptimizerState {
    /// Fresh state for variables of the given element counts, as Keras's `optimizer.build`.
    pub fn new(config: &OptimizerConfig, variable_sizes: &[usize]) -> Self {
        let slot_init = config.slot_initial_values();
        let scalars = config.scalar_initial_values();
        let variables = variable_sizes
            .iter()
            .map(|&n| VariableState {
                slots: slot_init.iter().map(|&v| vec![v; n]).collect(),
                scalars: scalars.clone(),
            })
            .collect();
        OptimizerState {
            iterations: 0,
            variables,
        }
    }
}

/// One optimizer step over all trainable variables, as Keras's `optimizer.apply(grads, vars)`:
/// clips the gradients (in place), applies weight decay and the update with learning rate `lr`,
/// then increments `state.iterations`. An empty variable list is a no-op, as in Keras.
///
/// Allocation-free once validated; large steps run on the project's thread pool, and the result
/// is bitwise the same for any thread count.
///
/// # Errors
/// When the config is invalid ([`OptimizerConfig::validate`]), `lr` is not finite, the numbers of
/// variables, gradients and states differ, or a gradient or slot array is not as long as its
/// variable. Everything is checked first: on error nothing is modified.
pub fn apply_gradients(
    config: &OptimizerConfig,
    state: &mut OptimizerState,
    lr: f32,
    vars: &mut [&mut [f32]],
    grads: &mut [Gradient<'_>],
) -> Result<(), String> {
    check_step(config, state, lr, vars, grads)?;
    if vars.is_empty() {
        return Ok(());
    }
    // Keras: `local_step = ops.cast(self.iterations + 1, variable.dtype)`.
    let local_step = state.iterations.saturating_add(1) as f32;
    let next_step = state.iterations.saturating_add(2) as f32;
    let u_product = state.variables[0]
        .scalars
        .first()
        .map_or(1.0, |&u| u as f32);
    let (rule, new_u_product) = step_rule(&config.kind, lr, local_step, next_step, u_product);
    let mut step = Step {
        decay: config.weight_decay.map(|wd| (wd, lr)),
        rule,
        iteration: state.iterations,
        zero: None,
    };
    step.zero = ZeroStep::of(&step);

    let states = &mut state.variables;
    clip_gradients(config, grads);
    update_group(&step, vars, grads, states);

    if let Some(u) = new_u_product {
        for v in state.variables.iter_mut() {
            v.scalars[0] = f64::from(u);
        }
    }
    state.iterations = state.iterations.saturating_add(1);
    Ok(())
}

fn check_step(
    config: &OptimizerConfig,
    state: &OptimizerState,
    lr: f32,
    vars: &[&mut [f32]],
    grads: &[Gradient<'_>],
) -> Result<(), String> {
    config.validate()?;
    let id = config.kind.name();
    if !lr.is_finite() {
        return Err(format!(
            "{id}: the learning rate must be a finite number, got {lr}"
        ));
    }
    if grads.len() != vars.len() {
        return Err(format!(
            "{id}: expected one gradient per variable ({} variables), got {} gradients",
            vars.len(),
            grads.len()
        ));
    }
    if state.variables.len() != vars.len() {
        return Err(format!(
            "{id}: the optimizer state was built for {} variables, got {}",
            state.variables.len(),
            vars.len()
        ));
    }
    let slots = config.slots_per_variable();
    let scalars = config.scalars_per_variable();
    for (i, ((v, g), s)) in vars.iter().zip(grads).zip(&state.variables).enumerate() {
        if g.len() != v.len() {
            return Err(format!(
                "{id}: gradient {i} must have as many elements as variable {i} ({}), got {}",
                v.len(),
                g.len()
            ));
        }
        if s.slots.len() != slots || s.scalars.len() != scalars {
            return Err(format!(
                "{id}: the state of variable {i} must hold {slots} slot arrays and {scalars} \
                 scalars, got {} and {}",
                s.slots.len(),
                s.scalars.len()
            ));
        }
        for (k, slot) in s.slots.iter().enumerate() {
            if slot.len() != v.len() {
                return Err(format!(
                    "{id}: slot {k} of variable {i} must have {} elements, got {}",
                    v.len(),
                    slot.len()
                ));
            }
        }
    }
    Ok(())
}

/// Keras's `_clip_gradients`: the first of `clipnorm`, `global_clipnorm`, `clipvalue` that is set
/// and > 0 is applied (validation allows only one to be set).
fn clip_gradients(config: &OptimizerConfig, grads: &mut [Gradient<'_>]) {
    let positive = |x: Option<f32>| x.filter(|&c| c > 0.0);
    if let Some(c) = positive(config.clipnorm) {
        // `_clip_by_norm`: values * clipnorm / maximum(l2norm, clipnorm), per variable.
        for g in grads.iter_mut() {
            let norm = (g.sum_squares() as f32).sqrt();
            let denominator = maximum(norm, c);
            g.map(move |x| (x * c) / denominator);
        }
    } else if let Some(c) = positive(config.global_clipnorm) {
        // `clip_by_global_norm`: scale = c * min(1 / norm, 1 / c) + (norm - norm); the last term
        // turns an infinite or NaN norm into a NaN scale, as in Keras.
        let total: f64 = grads.iter().map(Gradient::sum_squares).sum();
        let norm = (total as f32).sqrt();
        let norm_minus_norm = if norm.is_finite() { 0.0 } else { f32::NAN };
        let scale = c * minimum(1.0 / norm, 1.0 / c) + norm_minus_norm;
        for g in grads.iter_mut() {
            g.map(move |x| x * scale);
        }
    } else if let Some(v) = positive(config.clipvalue) {
        // `ops.clip(g, -v, v)`; a NaN gradient stays NaN.
        for g in grads.iter_mut() {
            g.map(move |x| x.clamp(-v, v));
        }
    }
}

/// A variable's gradient as the optimizer receives it.
#[derive(Debug)]
pub enum Gradient<'a> {
    /// As long as its variable.
    Dense(&'a mut [f32]),
    /// Zero but in the rows of a table that a step gathered (an embedding's).
    Rows(&'a mut RowSums),
}

impl Gradient<'_> {
    /// Number of elements (the variable's).
    fn len(&self) -> usize {
        match self {
            Gradient::Dense(g) => g.len(),
            Gradient::Rows(sums) => sums.rows * sums.row_len,
        }
    }

    /// The sum of squares [`sum_squares`] gives for the dense gradient.
    fn sum_squares(&self) -> f64 {
        match self {
            Gradient::Dense(g) => sum_squares(g),
            Gradient::Rows(sums) => sums.sum_squares(0..sums.rows * sums.row_len),
        }
    }

    /// `x <- f(x)` for every element.
    fn map(&mut self, f: impl Fn(f32) -> f32 + Sync + Send) {
        match self {
            Gradient::Dense(g) => map_in_place(g, f),
            Gradient::Rows(sums) => {
                sums.sums.iter_mut().for_each(|x| *x = f(*x));
                sums.others = f(sums.others);
            }
        }
    }
}

/// The gradient of a table whose rows a step gathered by index (`take` along axis 0, as an
/// embedding does): for each gathered row, the sum of the gradients of its copies; every other
/// row is zero. Only the gathered rows are stored, so the optimizer streams the table and its
/// slot arrays but not a table-sized gradient, and no table-sized buffer is zeroed each step.
///
/// A row's sum adds its copies' gradients in the order of the indices, as the dense
/// scatter-add does (from the first copy rather than from 0, which can change only the sign of
/// a zero sum), also when a deduplicating lookup made the sums ([`RowSums::adopt`]); clipping
/// maps the stored sums and the value of the other rows as it would map every element, so the
/// optimizer's result is bitwise the one the dense gradient gives. The buffers keep their
/// capacity from step to step.
#[derive(Debug)]
pub struct RowSums {
    rows: usize,
    row_len: usize,
    /// For each row of the table, its position in `sums`, or [`RowSums::ABSENT`].
    position: Vec<u32>,
    /// The gathered rows, in order of first appearance.
    gathered: Vec<u32>,
    /// Their sums, `row_len` each.
    sums: Vec<f32>,
    /// The value of every element of the other rows: 0 until clipping maps it.
    others: f32,
    /// Whether the updates of rows a step did not gather are put off ([`Self::defer_updates`]).
    deferring: bool,
    /// While updates are put off: for each row, the number of steps its weights and slots have
    /// seen.
    seen: Vec<u64>,
    /// The zero-gradient step the put-off updates replay; `None` while every row is up to date.
    put_off: Option<ZeroStep>,
    /// Whether the table's slot was >= 0 everywhere when first looked at in this call.
    slot_non_negative: Option<bool>,
}

impl RowSums {
    const ABSENT: u32 = u32::MAX;

    /// The (zero) gradient of a `rows x row_len` table; `None` when its rows are too many
    /// to number with `u32` (such a table keeps the dense gradient).
    pub fn new(rows: usize, row_len: usize) -> Option<Self> {
        (rows < Self::ABSENT as usize).then(|| RowSums {
            rows,
            row_len,
            position: vec![Self::ABSENT; rows],
            gathered: Vec::new(),
            sums: Vec::new(),
            others: 0.0,
            deferring: false,
            seen: Vec::new(),
            put_off: None,
            slot_non_negative: None,
        })
    }

    /// From now on, a step whose config [may put off updates](OptimizerConfig::may_put_off_updates)
    /// updates only the rows it gathered, each after the zero-gradient steps it missed, until
    /// [`settle_rows`] brings the others up to date. Keeps its buffer's capacity (one
    /// allocation, on the first call).
    pub fn defer_updates(&mut self) {
        self.seen.resize(self.rows, 0);
        self.put_off = None;
        self.slot_non_negative = None;
        self.deferring = true;
    }

    /// Stops putting updates off without replaying them (after an error, when there is no
    /// table to settle).
    pub fn stop_deferring(&mut self) {
        self.deferring = false;
        self.put_off = None;
    }

    /// Sets the gradient from the gradient `dy` of the rows that `indices` gathered
    /// (`indices.len() * row_len` values, copy after copy).
    ///
    /// # Errors
    /// When an index is outside the table's rows or `dy` has the wrong length; nothing is
    /// changed then.
    pub fn set(&mut self, indices: &[i32], dy: &[f32]) -> Result<(), String> {
        let (rows, row_len) = (self.rows, self.row_len);
        if Some(dy.len()) != indices.len().checked_mul(row_len) {
            return Err(format!(
                "the gradient of {} gathered rows of {row_len} must have {} elements, got {}",
                indices.len(),
                indices.len().saturating_mul(row_len),
                dy.len()
            ));
        }
        if let Some((at, &i)) = indices
            .iter()
            .enumerate()
            .find(|&(_, &i)| i < 0 || i as usize >= rows)
        {
            return Err(format!(
                "index {i} at position {at} is outside the table's {rows} rows"
            ));
        }
        for &r in &self.gathered {
            self.position[r as usize] = Self::ABSENT;
        }
        self.gathered.clear();
        self.sums.clear();
        // At most one row per index: reserved once, so later steps do not allocate.
        self.gathered.reserve(indices.len().min(rows));
        self.sums.reserve(indices.len().min(rows) * row_len);
        self.others = 0.0;
        for (&i, d) in indices.iter().zip(dy.chunks_exact(row_len.max(1))) {
            let p = &mut self.position[i as usize];
            if *p == Self::ABSENT {
                // A row's sum starts as its first copy (no zeroing pass).
                *p = self.gathered.len() as u32;
                self.gathered.push(i as u32);
                self.sums.extend_from_slice(d);
                continue;
            }
            let at = *p as usize * row_len;
            for (s, &v) in self.sums[at..at + row_len].iter_mut().zip(d) {
                *s += v;
            }
        }
        Ok(())
    }

    /// Sets the gradient from sums already made: `rows` starts with distinct rows, the first
    /// repeat ends them, and row `p` of `sums` is the sum of row `rows[p]`'s gradients; what
    /// follows in either is ignored (a deduplicating lookup's backward pads both, with the last
    /// row and with zeros). The gradient takes the buffer, which gets this one's old buffer,
    /// of the same length, so that both keep their capacity and the caller does not copy the
    /// sums.
    ///
    /// # Errors
    /// When a row before the first repeat is outside the table or `sums` is too short for the
    /// distinct rows; the gradient is zero then and the buffer unchanged.
    pub fn adopt(&mut self, rows: &[i32], sums: &mut Vec<f32>) -> Result<(), String> {
        let table_rows = self.rows;
        for &r in &self.gathered {
            self.position[r as usize] = Self::ABSENT;
        }
        self.gathered.clear();
        self.gathered.reserve(rows.len().min(table_rows));
        for (at, &r) in rows.iter().enumerate() {
            if r < 0 || r as usize >= table_rows {
                return Err(self.forget_gathered(format!(
                    "row {r} at position {at} is outside the table's {table_rows} rows"
                )));
            }
            let p = &mut self.position[r as usize];
            if *p != Self::ABSENT {
                break;
            }
            *p = self.gathered.len() as u32;
            self.gathered.push(r as u32);
        }
        let needed = self.gathered.len() * self.row_len;
        if sums.len() < needed {
            let message = format!(
                "the sums of {} distinct rows of {} need {needed} elements, got {}",
                self.gathered.len(),
                self.row_len,
                sums.len()
            );
            return Err(self.forget_gathered(message));
        }
        // Reserved once: later steps swap buffers of this length and do not allocate.
        self.sums.resize(sums.len(), 0.0);
        std::mem::swap(&mut self.sums, sums);
        self.others = 0.0;
        Ok(())
    }

    /// Leaves no row gathered (a zero gradient) and returns `message`, for a failed
    /// [`Self::adopt`].
    fn forget_gathered(&mut self, message: String) -> String {
        for &r in &self.gathered {
            self.position[r as usize] = Self::ABSENT;
        }
        self.gathered.clear();
        self.sums.clear();
        self.others = 0.0;
        message
    }

    /// Writes elements `start..start + out.len()` of the dense gradient into `out`.
    fn write_range(&self, start: usize, out: &mut [f32]) {
        let end = start + out.len();
        out.fill(self.others);
        if self.row_len == 0 {
            return;
        }
        for r in start / self.row_len..end.div_ceil(self.row_len) {
            let p = self.position[r];
            if p == Self::ABSENT {
                continue;
            }
            // The part of row r inside start..end.
            let (lo, hi) = (
                (r * self.row_len).max(start),
                ((r + 1) * self.row_len).min(end),
            );
            let from = p as usize * self.row_len + lo - r * self.row_len;
            out[lo - start..hi - start].copy_from_slice(&self.sums[from..from + hi - lo]);
        }
    }

    /// [`sum_squares`] of elements `range` of the dense gradient: the same split into pieces, each
    /// written out and summed as the dense one is.
    fn sum_squares(&self, range: std::ops::Range<usize>) -> f64 {
        let n = range.len();
        if n <= CHUNK {
            let mut sum = SquareSum::default();
            let whole = range.start + n / 4 * 4;
            let mut buf = [0.0f32; WRITTEN_OUT];
            for start in (range.start..whole).step_by(WRITTEN_OUT) {
                let g = &mut buf[..WRITTEN_OUT.min(whole - start)];
                self.write_range(start, g);
                sum.add_quads(g);
            }
            let tail = &mut buf[..range.end - whole];
            self.write_range(whole, tail);
            return sum.finish(tail);
        }
        let mid = range.start + split_point(n);
        let (a, b) = par::join(
            || self.sum_squares(range.start..mid),
            || self.sum_squares(mid..range.end),
        );
        a + b
    }
}

/// `ops.maximum` on float32: NaN if either operand is NaN.
fn maximum(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a >= b {
        a
    } else {
        b
    }
}

/// `ops.minimum` on float32: NaN if either operand is NaN.
fn minimum(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a <= b {
        a
    } else {
        b
    }
}

/// `f(x)` for every element, in parallel chunks for large slices.
fn map_in_place(data: &mut [f32], f: impl Fn(f32) -> f32 + Sync + Send) {
    par::for_each_chunk_mut(data, CHUNK, |_, chunk| {
        for x in chunk.iter_mut() {
            *x = f(*x);
        }
    });
}

/// Sum of squares in f64 over a split that depends only on the length, so the result is the same
/// for any thread count. Each square of a float32 is exact in f64.
fn sum_squares(x: &[f32]) -> f64 {
    if x.len() <= CHUNK {
        let mut sum = SquareSum::default();
        let whole = x.len() / 4 * 4;
        sum.add_quads(&x[..whole]);
        return sum.finish(&x[whole..]);
    }
    let (a, b) = x.split_at(split_point(x.len()));
    let (sa, sb) = par::join(|| sum_squares(a), || sum_squares(b));
    sa + sb
}

/// The sum of squares of one piece of at most [`CHUNK`] elements, fed in order: four
/// accumulators take the elements in turn, then the last `len % 4` are added on their own.
#[derive(Default)]
struct SquareSum {
    acc: [f64; 4],
}

impl SquareSum {
    /// The next elements of the piece, a multiple of four of them.
    fn add_quads(&mut self, x: &[f32]) {
        for q in x.chunks_exact(4) {
            for k in 0..4 {
                self.acc[k] += f64::from(q[k]) * f64::from(q[k]);
            }
        }
    }

    /// The sum, given the piece's last `len % 4` elements.
    fn finish(self, tail: &[f32]) -> f64 {
        let acc = self.acc;
        let tail: f64 = tail.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
    }
}

/// Where to cut `n > CHUNK` elements in two: at a multiple of [`CHUNK`] near the middle.
fn split_point(n: usize) -> usize {
    (n.div_ceil(CHUNK) / 2) * CHUNK
}

/// `ops.power(ops.cast(base, float32), local_step)`, correctly rounded.
fn pow_f32(base: f32, exponent: f32) -> f32 {
    f64::from(base).powf(f64::from(exponent)) as f32
}

/// The Python float a user most likely wrote for the float32 `x`: the shortest decimal that rounds
/// to `x`, read as an f64 (0.9f32 gives 0.9, not 0.8999999761581421).
///
/// Keras folds expressions such as `1 - self.beta_1` in Python doubles before they meet a float32
/// tensor; `(1.0 - py_float(beta_1)) as f32` gives the same float32 constant (0.1f32), where
/// `1.0f32 - beta_1` would give 0.10000002. Allocation-free: formats into a stack buffer.
fn py_float(x: f32) -> f64 {
    struct StackText {
        bytes: [u8; 48],
        len: usize,
    }
    impl std::fmt::Write for StackText {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let end = self.len + s.len();
            let dst = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
            dst.copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }
    if !x.is_finite() {
        return f64::from(x);
    }
    let mut text = StackText {
        bytes: [0; 48],
        len: 0,
    };
    // `{:e}` without a precision prints the shortest digits that read back as `x`.
    if write!(text, "{x:e}").is_ok() {
        if let Some(d) = std::str::from_utf8(&text.bytes[..text.len])
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
        {
            if d as f32 == x {
                return d;
            }
        }
    }
    f64::from(x)
}

/// `(1 - x)` folded in Python doubles, then cast to float32.
fn one_minus_py(x: f32) -> f32 {
    (1.0 - py_float(x)) as f32
}

/// One step's update, with every per-step scalar already computed in Keras's float32 order.
#[derive(Clone, Copy, Debug)]
enum Rule {
    Sgd {
        lr: f32,
        momentum: Option<f32>,
        nesterov: bool,
    },
    RmsProp {
        lr: f32,
        rho: f32,
        one_minus_rho: f32,
        epsilon: f32,
        momentum: Option<f32>,
        centered: bool,
    },
    Adam {
        alpha: f32,
        one_minus_beta_1: f32,
        one_minus_beta_2: f32,
        epsilon: f32,
        amsgrad: bool,
    },
    Adagrad {
        lr: f32,
        epsilon: f32,
    },
    Adadelta {
        lr: f32,
        rho: f32,
        one_minus_rho: f32,
        epsilon: f32,
    },
    Adamax {
        lr: f32,
        one_minus_beta_1: f32,
        beta_2: f32,
        /// `1 - beta_1 ** local_step`.
        bias_correction: f32,
        epsilon: f32,
    },
    Nadam {
        lr: f32,
        one_minus_beta_1: f32,
        one_minus_beta_2: f32,
        /// `u_{t+1}`.
        u_next: f32,
        /// `1 - u_t`.
        one_minus_u: f32,
        /// `1 - u_product_{t+1}`, divides the momentum term of `m_hat`.
        m_denominator: f32,
        /// `1 - u_product_t`, divides the gradient term of `m_hat`.
        g_denominator: f32,
        /// `1 - beta_2 ** local_step`.
        v_denominator: f32,
        epsilon: f32,
    },
}

/// The whole per-step recipe: optional weight decay `(weight_decay, lr)`, then the rule.
#[derive(Clone, Copy, Debug)]
struct Step {
    decay: Option<(f32, f32)>,
    rule: Rule,
    /// The number of steps applied before this one.
    iteration: u64,
    /// What this step does to an element whose gradient is +0, when rows may be put off.
    zero: Option<ZeroStep>,
}

/// What a step does to an element whose gradient is +0, for the rules where, with a slot >= 0,
/// it leaves the weight as it is (but for flushing a subnormal one) and at most scales the slot:
/// such steps can be replayed later, row by row ([`replay_zero_steps`]). It depends on the config
/// alone (the learning rate only has to be finite and >= +0, so `lr * +0` is +0).
#[derive(Clone, Copy, Debug, PartialEq)]
enum ZeroStep {
    /// Plain SGD: `w - (+0)`.
    Sgd,
    /// RMSprop without momentum, not centered: `v <- rho * v + (1 - rho) * (+0 * +0)`, then
    /// `w - (+0) / sqrt(v + epsilon)`; `zero_term` is `(1 - rho) * (+0 * +0)`.
    RmsProp { rho: f32, zero_term: f32 },
    /// Adagrad: `a <- a + (+0 * +0)`, then `w - (+0) / sqrt(a + epsilon)`.
    Adagrad,
}

impl ZeroStep {
    fn of(step: &Step) -> Option<Self> {
        let zero_increment = |lr: f32| (lr * 0.0).to_bits() == 0;
        let normal = |x: f32| x >= f32::MIN_POSITIVE && x.is_finite();
        match (step.decay, step.rule) {
            (Some(_), _) => None,
            (
                None,
                Rule::Sgd {
                    lr, momentum: None, ..
                },
            ) if zero_increment(lr) => Some(ZeroStep::Sgd),
            // A normal rho keeps an infinite velocity infinite (0 * inf would be NaN) and a
            // normal epsilon keeps every denominator of a velocity >= 0 above 0 (a subnormal one
            // reads as 0).
            (
                None,
                Rule::RmsProp {
                    lr,
                    rho,
                    one_minus_rho,
                    epsilon,
                    momentum: None,
                    centered: false,
                },
            ) if zero_increment(lr) && normal(rho) && normal(epsilon) => Some(ZeroStep::RmsProp {
                rho,
                zero_term: one_minus_rho * (0.0 * 0.0),
            }),
            (None, Rule::Adagrad { lr, epsilon }) if zero_increment(lr) && normal(epsilon) => {
                Some(ZeroStep::Adagrad)
            }
            _ => None,
        }
    }
}

/// Per-step scalars of `kind` at `local_step` (and `next_step = local_step + 1` for Nadam).
/// For Nadam also returns the new shared `u_product` (Keras updates it once per step, in
/// `_backend_update_step`, before any variable).
fn step_rule(
    kind: &OptimizerKind,
    lr: f32,
    local_step: f32,
    next_step: f32,
    u_product: f32,
) -> (Rule, Option<f32>) {
    let rule = match *kind {
        OptimizerKind::Sgd { momentum, nesterov } => Rule::Sgd {
            lr,
            momentum: (momentum != 0.0).then_some(momentum),
            nesterov,
        },
        OptimizerKind::RmsProp {
            rho,
            momentum,
            epsilon,
            centered,
        } => Rule::RmsProp {
            lr,
            rho,
            one_minus_rho: one_minus_py(rho),
            epsilon,
            momentum: (momentum > 0.0).then_some(momentum),
            centered,
        },
        OptimizerKind::Adam {
            beta_1,
            beta_2,
            epsilon,
            amsgrad,
        }
        | OptimizerKind::AdamW {
            beta_1,
            beta_2,
            epsilon,
            amsgrad,
        } => {
            let beta_1_power = pow_f32(beta_1, local_step);
            let beta_2_power = pow_f32(beta_2, local_step);
            // `alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)`, float32.
            let alpha = lr * (1.0 - beta_2_power).sqrt() / (1.0 - beta_1_power);
            Rule::Adam {
                alpha,
                one_minus_beta_1: one_minus_py(beta_1),
                one_minus_beta_2: one_minus_py(beta_2),
                epsilon,
                amsgrad,
            }
        }
        OptimizerKind::Adagrad { epsilon, .. } => Rule::Adagrad { lr, epsilon },
        OptimizerKind::Adadelta { rho, epsilon } => Rule::Adadelta {
            lr,
            rho,
            one_minus_rho: one_minus_py(rho),
            epsilon,
        },
        OptimizerKind::Adamax {
            beta_1,
            beta_2,
            epsilon,
        } => Rule::Adamax {
            lr,
            one_minus_beta_1: one_minus_py(beta_1),
            beta_2,
            bias_correction: 1.0 - pow_f32(beta_1, local_step),
            epsilon,
        },
        OptimizerKind::Nadam {
            beta_1,
            beta_2,
            epsilon,
        } => {
            // Everything here is float32 arithmetic on cast values, as in Keras's nadam.py.
            let decay = 0.96f32;
            let factor = 1.0 - 0.5 * pow_f32(decay, local_step);
            let u_product_t = u_product * beta_1 * factor;
            let u_t = beta_1 * factor;
            let u_t_1 = beta_1 * (1.0 - 0.5 * pow_f32(decay, next_step));
            let u_product_t_1 = u_product_t * u_t_1;
            let rule = Rule::Nadam {
                lr,
                one_minus_beta_1: 1.0 - beta_1,
                one_minus_beta_2: 1.0 - beta_2,
                u_next: u_t_1,
                one_minus_u: 1.0 - u_t,
                m_denominator: 1.0 - u_product_t_1,
                g_denominator: 1.0 - u_product_t,
                v_denominator: 1.0 - pow_f32(beta_2, local_step),
                epsilon,
            };
            return (rule, Some(u_product_t));
        }
    };
    (rule, None)
}

/// A variable (or a piece of one) with its gradient and slot arrays; unused slots are empty.
struct Lanes<'a> {
    var: &'a mut [f32],
    grad: GradPart<'a>,
    slots: [&'a mut [f32]; MAX_SLOTS],
}

/// The gradient of a piece of a variable: a slice as long as the piece, or the piece's
/// elements of a [`RowSums`], from element `start` of the variable on.
#[derive(Clone, Copy)]
enum GradPart<'a> {
    Dense(&'a [f32]),
    /// A table's gathered rows' sums from element `start` of the table on; with `zero`, the
    /// rows that were not gathered take that zero-gradient step (see [`update_deferring`]).
    Rows {
        sums: &'a RowSums,
        start: usize,
        zero: Option<ZeroStep>,
    },
}

impl<'a> Lanes<'a> {
    fn new(var: &'a mut [f32], grad: &'a Gradient<'_>, slots: &'a mut [Vec<f32>]) -> Self {
        let grad = match grad {
            Gradient::Dense(g) => GradPart::Dense(g),
            Gradient::Rows(sums) => GradPart::Rows {
                sums,
                start: 0,
                zero: None,
            },
        };
        Self::with_grad(var, grad, slots)
    }

    fn with_grad(var: &'a mut [f32], grad: GradPart<'a>, slots: &'a mut [Vec<f32>]) -> Self {
        Lanes {
            var,
            grad,
            slots: slot_slices(slots),
        }
    }

    fn split_at(self, mid: usize) -> (Self, Self) {
        let Lanes { var, grad, slots } = self;
        let (var_a, var_b) = var.split_at_mut(mid);
        let (grad_a, grad_b) = match grad {
            GradPart::Dense(g) => {
                let (a, b) = g.split_at(mid);
                (GradPart::Dense(a), GradPart::Dense(b))
            }
            GradPart::Rows { sums, start, zero } => (
                GradPart::Rows { sums, start, zero },
                GradPart::Rows {
                    sums,
                    start: start + mid,
                    zero,
                },
            ),
        };
        let (slots_a, slots_b) = split_slots(slots, mid);
        (
            Lanes {
                var: var_a,
                grad: grad_a,
                slots: slots_a,
            },
            Lanes {
                var: var_b,
                grad: grad_b,
                slots: slots_b,
            },
        )
    }
}

/// A variable's slot arrays as slices.
fn slot_slices(slots: &mut [Vec<f32>]) -> SlotSlices<'_> {
    let mut lanes: SlotSlices = Default::default();
    for (dst, src) in lanes.iter_mut().zip(slots.iter_mut()) {
        *dst = src.as_mut_slice();
    }
    lanes
}

/// A variable's (or a piece's) slot arrays, unused ones empty.
type SlotSlices<'a> = [&'a mut [f32]; MAX_SLOTS];

/// Splits each used slot slice at `mid`.
fn split_slots(slots: SlotSlices<'_>, mid: usize) -> (SlotSlices<'_>, SlotSlices<'_>) {
    let (mut a, mut b): (SlotSlices, SlotSlices) = Default::default();
    for (k, slot) in slots.into_iter().enumerate() {
        if !slot.is_empty() {
            (a[k], b[k]) = slot.split_at_mut(mid);
        }
    }
    (a, b)
}

/// Updates a list of variables: splits the list in two halves of similar element counts while it
/// holds more than [`CHUNK`] elements, so small variables are batched into one task and large ones
/// are split further by [`update_split`].
fn update_group(
    step: &Step,
    vars: &mut [&mut [f32]],
    grads: &mut [Gradient<'_>],
    states: &mut [VariableState],
) {
    let total: usize = vars.iter().map(|v| v.len()).sum();
    if vars.len() > 1 && total > CHUNK {
        let half = total / 2;
        let (mut k, mut acc) = (0, 0);
        while k + 1 < vars.len() && acc + vars[k].len() <= half {
            acc += vars[k].len();
            k += 1;
        }
        let k = k.max(1);
        let (vars_a, vars_b) = vars.split_at_mut(k);
        let (grads_a, grads_b) = grads.split_at_mut(k);
        let (states_a, states_b) = states.split_at_mut(k);
        par::join(
            || update_group(step, vars_a, grads_a, states_a),
            || update_group(step, vars_b, grads_b, states_b),
        );
        return;
    }
    for ((v, g), s) in vars.iter_mut().zip(grads).zip(states.iter_mut()) {
        match g {
            Gradient::Rows(sums) if sums.deferring => update_deferring(step, v, sums, &mut s.slots),
            _ => update_split(step, Lanes::new(v, g, &mut s.slots)),
        }
    }
}

/// Updates a table whose zero-gradient updates are put off: only the gathered rows when the step
/// can put the others off as the earlier ones did; otherwise every row, after bringing them all
/// up to date.
fn update_deferring(step: &Step, var: &mut [f32], sums: &mut RowSums, slots: &mut [Vec<f32>]) {
    // Clipping may have made the other rows' gradient nonzero (a NaN norm). Reading and writing
    // the gathered rows at random costs several times what streaming them does, so a step that
    // gathers many of the table's rows updates all of them. A velocity or accumulator that is
    // negative or NaN (set so by hand) could make a zero-gradient step turn a weight NaN, which
    // the next steps' forward passes would then have to read: such a table is updated whole.
    // Training keeps a slot that is >= 0 so (or NaN together with its weight), so one look per
    // call is enough.
    let few = sums.gathered.len() * FEW_ROWS <= sums.rows;
    // What a row that was not gathered goes through, when the zero-gradient step can be replayed.
    let zero = step
        .zero
        .filter(|_| sums.others.to_bits() == 0)
        .filter(|_| {
            *sums
                .slot_non_negative
                .get_or_insert_with(|| slots.first().is_none_or(|s| reduce::all_non_negative(s)))
        });
    match zero {
        Some(zero) if few && sums.put_off.is_none_or(|p| p == zero) => {
            if sums.put_off.replace(zero).is_none() {
                // Every row is up to date: the first update put off.
                sums.seen.fill(step.iteration);
            }
            let RowSums {
                rows,
                row_len,
                gathered,
                sums: row_sums,
                seen,
                ..
            } = sums;
            let band = Band::new(*row_len, var, slots, seen);
            update_gathered(step, zero, *rows, gathered, row_sums, band);
        }
        _ => {
            if let Some(put_off) = sums.put_off.take() {
                settle_band(put_off, step.iteration, table_band(var, sums, slots));
            }
            // The rows that were not gathered take the zero-gradient step as a replay does: the
            // same bits as the full update without its square root and division.
            let grad = GradPart::Rows {
                sums,
                start: 0,
                zero,
            };
            update_split(step, Lanes::with_grad(var, grad, slots));
        }
    }
}

/// A step updates only the rows it gathered when they are at most one in `FEW_ROWS` of the
/// table's (the ticket model's titles, 320 of 10,000 rows, are; its bodies, 2,700, are not).
const FEW_ROWS: usize = 8;

/// The band of all rows of `var`, whose put-off updates `sums` tracks.
fn table_band<'a>(
    var: &'a mut [f32],
    sums: &'a mut RowSums,
    slots: &'a mut [Vec<f32>],
) -> Band<'a> {
    Band::new(sums.row_len, var, slots, &mut sums.seen)
}

/// Replays the updates `sums` put off on `var` and its slot arrays (in `state`), so every row has
/// seen `iterations` steps, and stops putting updates off. A no-op when none were.
///
/// # Errors
/// When `var` or the slot arrays do not have the table's size, or a row has seen more steps than
/// `iterations` (nothing changes then; the updates are no longer tracked).
pub fn settle_rows(
    sums: &mut RowSums,
    var: &mut [f32],
    state: &mut VariableState,
    iterations: u64,
) -> Result<(), String> {
    let deferring = std::mem::take(&mut sums.deferring);
    let Some(put_off) = sums.put_off.filter(|_| deferring) else {
        return Ok(());
    };
    let len = sums.rows * sums.row_len;
    if var.len() != len || state.slots.iter().any(|s| s.len() != len) {
        return Err(format!(
            "settling a table of {len} elements: got a variable of {} and slot arrays of {:?}",
            var.len(),
            state.slots.iter().map(Vec::len).collect::<Vec<_>>()
        ));
    }
    if sums.seen.iter().any(|&seen| seen > iterations) {
        return Err(format!(
            "settling a table at step {iterations}: some of its rows have seen more steps"
        ));
    }
    settle_band(put_off, iterations, table_band(var, sums, &mut state.slots));
    sums.put_off = None;
    Ok(())
}

/// Consecutive rows of a table: their weights, slot arrays (empty when unused) and step counts.
struct Band<'a> {
    /// The table's row of the band's first.
    first: usize,
    row_len: usize,
    var: &'a mut [f32],
    slots: [&'a mut [f32]; MAX_SLOTS],
    seen: &'a mut [u64],
}

impl<'a> Band<'a> {
    fn new(
        row_len: usize,
        var: &'a mut [f32],
        slots: &'a mut [Vec<f32>],
        seen: &'a mut [u64],
    ) -> Self {
        Band {
            first: 0,
            row_len,
            var,
            slots: slot_slices(slots),
            seen,
        }
    }

    fn rows(&self) -> usize {
        self.seen.len()
    }

    /// The first `k` rows and the rest.
    fn split(self, k: usize) -> (Self, Self) {
        let Band {
            first,
            row_len,
            var,
            slots,
            seen,
        } = self;
        let at = k * row_len;
        let (var_a, var_b) = var.split_at_mut(at);
        let (seen_a, seen_b) = seen.split_at_mut(k);
        let (slots_a, slots_b) = split_slots(slots, at);
        (
            Band {
                first,
                row_len,
                var: var_a,
                slots: slots_a,
                seen: seen_a,
            },
            Band {
                first: first + k,
                row_len,
                var: var_b,
                slots: slots_b,
                seen: seen_b,
            },
        )
    }

    /// Asks for row `i`'s weights, slot rows and step count ahead of their use.
    fn prefetch_row(&self, i: usize) {
        let range = i * self.row_len..(i + 1) * self.row_len;
        cpu::prefetch(&self.var[range.clone()]);
        for slot in self.slots.iter().filter(|s| !s.is_empty()) {
            cpu::prefetch(&slot[range.clone()]);
        }
        cpu::prefetch(&self.seen[i..i + 1]);
    }

    /// Row `i` of the band: its weights and slot rows.
    fn row(&mut self, i: usize) -> (&mut [f32], [&mut [f32]; MAX_SLOTS]) {
        let range = i * self.row_len..(i + 1) * self.row_len;
        let mut slots: [&mut [f32]; MAX_SLOTS] = Default::default();
        for (dst, src) in slots.iter_mut().zip(self.slots.iter_mut()) {
            if !src.is_empty() {
                *dst = &mut src[range.clone()];
            }
        }
        (&mut self.var[range], slots)
    }
}

/// Updates the rows of `band` among `gathered` (row sums `row_sums`), splitting the band in
/// halves while it holds more than [`CHUNK`] elements of them by a uniform estimate (each row's
/// result is the same whatever the split).
fn update_gathered(
    step: &Step,
    zero: ZeroStep,
    table_rows: usize,
    gathered: &[u32],
    row_sums: &[f32],
    band: Band<'_>,
) {
    let rows = band.rows();
    let estimate = gathered.len() * band.row_len * rows / table_rows.max(1);
    if rows >= 2 && estimate > CHUNK {
        let (a, b) = band.split(rows / 2);
        par::join(
            || update_gathered(step, zero, table_rows, gathered, row_sums, a),
            || update_gathered(step, zero, table_rows, gathered, row_sums, b),
        );
        return;
    }
    cpu::run_at(
        cpu::active(),
        &mut GatheredUpdate {
            step,
            zero,
            gathered,
            row_sums,
            band,
        },
    );
}

/// The gathered rows of one band: each replays the zero-gradient steps it missed, then takes
/// this step's update (compiled for the active instruction set).
struct GatheredUpdate<'s, 'a> {
    step: &'s Step,
    zero: ZeroStep,
    gathered: &'s [u32],
    row_sums: &'s [f32],
    band: Band<'a>,
}

impl SimdBody for GatheredUpdate<'_, '_> {
    #[inline(always)]
    fn run(&mut self) {
        let (step, band) = (self.step, &mut self.band);
        let row_len = band.row_len;
        let in_band = |band: &Band, r: u32| {
            (r as usize)
                .checked_sub(band.first)
                .filter(|&i| i < band.rows())
        };
        for (p, &r) in self.gathered.iter().enumerate() {
            // The rows lie scattered over the table: each one's first use would wait on
            // memory, one after the other. Asking for a later row now overlaps the waits.
            if let Some(i) = self
                .gathered
                .get(p + ROWS_AHEAD)
                .and_then(|&r| in_band(band, r))
            {
                band.prefetch_row(i);
            }
            let Some(i) = in_band(band, r) else {
                continue;
            };
            let missed = step.iteration.saturating_sub(band.seen[i]);
            let (var, slots) = band.row(i);
            if missed > 0 {
                replay_zero_steps(self.zero, missed, var, slots[0]);
            }
            let grad = &self.row_sums[p * row_len..(p + 1) * row_len];
            update_lanes(step, Piece { var, grad, slots });
            band.seen[i] = step.iteration + 1;
        }
    }
}

/// How many gathered rows ahead [`GatheredUpdate`] asks for a row's weights and slots (the
/// ticket model's title table, 320 of 10,000 rows a step, one thread: 0.147 ms per step without,
/// 0.108 four rows ahead, 0.099 eight).
const ROWS_AHEAD: usize = 8;

/// Brings every row of `band` up to `iterations` steps by replaying the `zero` steps it missed,
/// in halves of at most [`CHUNK`] elements.
fn settle_band(zero: ZeroStep, iterations: u64, band: Band<'_>) {
    let rows = band.rows();
    if rows >= 2 && rows * band.row_len > CHUNK {
        let (a, b) = band.split(rows / 2);
        par::join(
            || settle_band(zero, iterations, a),
            || settle_band(zero, iterations, b),
        );
        return;
    }
    cpu::run_at(
        cpu::active(),
        &mut Settle {
            zero,
            iterations,
            band,
        },
    );
}

/// [`settle_band`]'s work on one band, compiled for the active instruction set.
struct Settle<'a> {
    zero: ZeroStep,
    iterations: u64,
    band: Band<'a>,
}

impl SimdBody for Settle<'_> {
    #[inline(always)]
    fn run(&mut self) {
        let band = &mut self.band;
        for i in 0..band.rows() {
            let missed = self.iterations.saturating_sub(band.seen[i]);
            if missed > 0 {
                let (var, slots) = band.row(i);
                replay_zero_steps(self.zero, missed, var, slots[0]);
                band.seen[i] = self.iterations;
            }
        }
    }
}

/// Applies `steps` (>= 1) steps of `zero` to a row's weights and first slot array, with each
/// element's operations in the order the update performs them, so the bits are those of the
/// update with a +0 gradient run `steps` times. The slot must be >= 0 (or NaN where the weight
/// is NaN) and `zero` a [`ZeroStep::of`] step, so every denominator is > 0: the weight's
/// `w - +0 / sqrt(d)` is `w - +0` (which flushes a subnormal one; a NaN stays NaN).
#[inline(always)]
fn replay_zero_steps(zero: ZeroStep, steps: u64, var: &mut [f32], slot: &mut [f32]) {
    // `lr * +0`; opaque, so that `w - +0` is computed (under the flush it zeroes a subnormal
    // weight, as the update does) rather than folded away.
    let zero_increment = std::hint::black_box(0.0f32);
    // The same whether done once or `steps` times.
    var.iter_mut().for_each(|w| *w -= zero_increment);
    match zero {
        ZeroStep::Sgd => {}
        // `a + (+0 * +0)` is the same at every step after the first.
        ZeroStep::Adagrad => {
            for a in slot.iter_mut() {
                *a += zero_increment * zero_increment;
            }
        }
        ZeroStep::RmsProp { rho, zero_term } => {
            let mut blocks = slot.chunks_exact_mut(LANES);
            for v in &mut blocks {
                let v: &mut [f32; LANES] = v.try_into().expect("a whole block");
                // Whole blocks: independent chains of multiplies and adds.
                let mut x = *v;
                for _ in 0..steps {
                    for x in x.iter_mut() {
                        *x = rho * *x + zero_term;
                    }
                }
                *v = x;
            }
            for v in blocks.into_remainder() {
                for _ in 0..steps {
                    *v = rho * *v + zero_term;
                }
            }
        }
    }
}

/// Velocities per block of [`replay_zero_steps`]: eight AVX2 vectors, enough independent chains
/// of multiplies and adds to keep both kinds of unit busy.
const LANES: usize = 64;

/// Updates one variable, cut into halves at multiples of [`CHUNK`] while it is longer than that.
fn update_split(step: &Step, lanes: Lanes<'_>) {
    let n = lanes.var.len();
    if n <= CHUNK {
        let Lanes { var, grad, slots } = lanes;
        match grad {
            GradPart::Dense(grad) => run_update(step, Piece { var, grad, slots }),
            GradPart::Rows { sums, start, zero } => cpu::run_at(
                cpu::active(),
                &mut RowsUpdate {
                    step,
                    sums,
                    start,
                    zero,
                    piece: Some((var, slots)),
                },
            ),
        }
        return;
    }
    let (a, b) = lanes.split_at(split_point(n));
    par::join(|| update_split(step, a), || update_split(step, b));
}

/// A piece of a table whose gradient is a [`RowSums`], from element `start` of the table on:
/// each gathered row is updated with its sum where it lies, each run of other rows with a buffer
/// of their common value, so no gradient is written out. One function, compiled for the active
/// instruction set, runs the rule's loops row after row.
struct RowsUpdate<'s, 'a> {
    step: &'s Step,
    sums: &'s RowSums,
    start: usize,
    /// The zero-gradient step the rows that were not gathered take, if it can be replayed.
    zero: Option<ZeroStep>,
    piece: Option<(&'a mut [f32], SlotSlices<'a>)>,
}

impl SimdBody for RowsUpdate<'_, '_> {
    #[inline(always)]
    fn run(&mut self) {
        let Some((mut var, mut slots)) = self.piece.take() else {
            return;
        };
        let sums = self.sums;
        let row_len = sums.row_len.max(1);
        let others = [sums.others; WRITTEN_OUT];
        let gathered_at = |at: usize| match sums.position[at / row_len] {
            RowSums::ABSENT => None,
            p => Some(p as usize * row_len + at % row_len),
        };
        let mut at = self.start;
        while !var.is_empty() {
            let end = at + var.len();
            let row_end = |at: usize| ((at / row_len + 1) * row_len).min(end);
            let (len, grad, gathered) = match gathered_at(at) {
                Some(from) => {
                    let len = row_end(at) - at;
                    (len, &sums.sums[from..from + len], true)
                }
                None => {
                    // Rows that were not gathered, as many as the buffer holds.
                    let mut run_end = row_end(at);
                    while run_end < end
                        && run_end - at < WRITTEN_OUT
                        && gathered_at(run_end).is_none()
                    {
                        run_end = row_end(run_end);
                    }
                    let len = (run_end - at).min(WRITTEN_OUT);
                    (len, &others[..len], false)
                }
            };
            let (head, tail) = std::mem::take(&mut var).split_at_mut(len);
            let (slots_head, slots_tail) = split_slots(slots, len);
            match self.zero.filter(|_| !gathered) {
                Some(zero) => {
                    let [slot, ..] = slots_head;
                    replay_zero_steps(zero, 1, head, slot);
                }
                None => update_lanes(
                    self.step,
                    Piece {
                        var: head,
                        grad,
                        slots: slots_head,
                    },
                ),
            }
            (var, slots, at) = (tail, slots_tail, at + len);
        }
    }
}

/// Updates `piece` with the kernel compiled for the active instruction set.
fn run_update(step: &Step, piece: Piece<'_>) {
    cpu::run_at(
        cpu::active(),
        &mut Update {
            step,
            piece: Some(piece),
        },
    );
}

/// One piece's update, compiled for the active instruction set: the sqrt and divide of the
/// adaptive rules bound these loops, and wider vectors do more of them per cycle (same bits:
/// the operations are the same IEEE ones at every width).
struct Update<'s, 'a> {
    step: &'s Step,
    piece: Option<Piece<'a>>,
}

/// A piece of a variable with its gradient, written out, and its slot arrays.
struct Piece<'a> {
    var: &'a mut [f32],
    grad: &'a [f32],
    slots: [&'a mut [f32]; MAX_SLOTS],
}

impl SimdBody for Update<'_, '_> {
    #[inline(always)]
    fn run(&mut self) {
        if let Some(piece) = self.piece.take() {
            update_lanes(self.step, piece);
        }
    }
}

/// The fused kernel on one piece: weight decay, then the optimizer's `update_step`, each
/// element in Keras's float32 operation order.
#[inline(always)]
fn update_lanes(step: &Step, piece: Piece<'_>) {
    let Piece {
        var,
        grad,
        slots: [s0, s1, s2],
    } = piece;
    if let Some((wd, lr)) = step.decay {
        // `variable.assign(variable - variable * wd * lr)`.
        for w in var.iter_mut() {
            *w = *w - *w * wd * lr;
        }
    }
    match step.rule {
        Rule::Sgd {
            lr, momentum: None, ..
        } => {
            for (w, &g) in var.iter_mut().zip(grad) {
                *w -= g * lr;
            }
        }
        Rule::Sgd {
            lr,
            momentum: Some(mu),
            nesterov,
        } => {
            for ((w, &g), m) in var.iter_mut().zip(grad).zip(s0.iter_mut()) {
                *m = *m * mu - g * lr;
                if nesterov {
                    *w += *m * mu - g * lr;
                } else {
                    *w += *m;
                }
            }
        }
        Rule::RmsProp {
            lr,
            rho,
            one_minus_rho,
            epsilon,
            momentum,
            centered,
        } => {
            // Slots: velocity, then momentum if any, then average_gradient if centered.
            let c = RmsPropScalars {
                lr,
                rho,
                one_minus_rho,
                epsilon,
                momentum: momentum.unwrap_or(0.0),
            };
            match (momentum.is_some(), centered) {
                (false, false) => rmsprop::<false, false>(var, grad, s0, s1, s2, c),
                (false, true) => rmsprop::<false, true>(var, grad, s0, s2, s1, c),
                (true, false) => rmsprop::<true, false>(var, grad, s0, s1, s2, c),
                (true, true) => rmsprop::<true, true>(var, grad, s0, s1, s2, c),
            }
        }
        Rule::Adam {
            alpha,
            one_minus_beta_1,
            one_minus_beta_2,
            epsilon,
            amsgrad: false,
        } => {
            for (((w, &g), m), v) in var
                .iter_mut()
                .zip(grad)
                .zip(s0.iter_mut())
                .zip(s1.iter_mut())
            {
                *m += (g - *m) * one_minus_beta_1;
                *v += (g * g - *v) * one_minus_beta_2;
                *w -= (*m * alpha) / (v.sqrt() + epsilon);
            }
        }
        Rule::Adam {
            alpha,
            one_minus_beta_1,
            one_minus_beta_2,
            epsilon,
            amsgrad: true,
        } => {
            let slots = s0.iter_mut().zip(s1.iter_mut()).zip(s2.iter_mut());
            for ((w, &g), ((m, v), v_hat)) in var.iter_mut().zip(grad).zip(slots) {
                *m += (g - *m) * one_minus_beta_1;
                *v += (g * g - *v) * one_minus_beta_2;
                *v_hat = maximum(*v_hat, *v);
                *w -= (*m * alpha) / (v_hat.sqrt() + epsilon);
            }
        }
        Rule::Adagrad { lr, epsilon } => {
            for ((w, &g), acc) in var.iter_mut().zip(grad).zip(s0.iter_mut()) {
                *acc += g * g;
                *w -= (lr * g) / (*acc + epsilon).sqrt();
            }
        }
        Rule::Adadelta {
            lr,
            rho,
            one_minus_rho,
            epsilon,
        } => {
            let slots = s0.iter_mut().zip(s1.iter_mut());
            for ((w, &g), (acc_grad, acc_delta)) in var.iter_mut().zip(grad).zip(slots) {
                *acc_grad = rho * *acc_grad + one_minus_rho * (g * g);
                let delta = -(((*acc_delta + epsilon).sqrt() * g) / (*acc_grad + epsilon).sqrt());
                *acc_delta = rho * *acc_delta + one_minus_rho * (delta * delta);
                *w += lr * delta;
            }
        }
        Rule::Adamax {
            lr,
            one_minus_beta_1,
            beta_2,
            bias_correction,
            epsilon,
        } => {
            for (((w, &g), m), u) in var
                .iter_mut()
                .zip(grad)
                .zip(s0.iter_mut())
                .zip(s1.iter_mut())
            {
                *m += (g - *m) * one_minus_beta_1;
                *u = maximum(beta_2 * *u, g.abs());
                *w -= (lr * *m) / (bias_correction * (*u + epsilon));
            }
        }
        Rule::Nadam {
            lr,
            one_minus_beta_1,
            one_minus_beta_2,
            u_next,
            one_minus_u,
            m_denominator,
            g_denominator,
            v_denominator,
            epsilon,
        } => {
            for (((w, &g), m), v) in var
                .iter_mut()
                .zip(grad)
                .zip(s0.iter_mut())
                .zip(s1.iter_mut())
            {
                *m += (g - *m) * one_minus_beta_1;
                *v += (g * g - *v) * one_minus_beta_2;
                let m_hat = (u_next * *m) / m_denominator + (one_minus_u * g) / g_denominator;
                let v_hat = *v / v_denominator;
                *w -= (m_hat * lr) / (v_hat.sqrt() + epsilon);
            }
        }
    }
}

#[derive(Clone, Copy)]
struct RmsPropScalars {
    lr: f32,
    rho: f32,
    one_minus_rho: f32,
    epsilon: f32,
    momentum: f32,
}

/// RMSprop's `update_step`, specialised on its two options so the loops have no per-element
/// branches or bounds checks (`momentum` / `average_gradient` are only touched when enabled).
#[inline(always)]
fn rmsprop<const MOMENTUM: bool, const CENTERED: bool>(
    var: &mut [f32],
    grad: &[f32],
    velocity: &mut [f32],
    momentum: &mut [f32],
    average_gradient: &mut [f32],
    c: RmsPropScalars,
) {
    let n = var.len();
    let (grad, velocity) = (&grad[..n], &mut velocity[..n]);
    // Without momentum, an element whose gradient is +0 gets `var -= +0 / sqrt(d)`, which
    // leaves it as it is (rounding to nearest, as always here) when `lr * +0` is +0, `d > 0`
    // and the variable is neither subnormal (the subtraction would flush it) nor NaN (it
    // would quiet a signalling one): a block of such elements skips the square root, the
    // divide and the store. These are the rows of an embedding table that a batch did not
    // touch, most of a large one at every step.
    let may_skip = !MOMENTUM && c.lr.is_finite() && c.lr.is_sign_positive();
    let full = n / RMS_BLOCK * RMS_BLOCK;
    let mut denominators = [0.0f32; RMS_BLOCK];
    for b0 in (0..full).step_by(RMS_BLOCK) {
        let block = b0..b0 + RMS_BLOCK;
        let (g, v, w) = (
            &grad[block.clone()],
            &mut velocity[block.clone()],
            &mut var[block.clone()],
        );
        let a: &mut [f32] = if CENTERED {
            &mut average_gradient[block.clone()]
        } else {
            &mut []
        };
        let mut unchanged = may_skip;
        for k in 0..RMS_BLOCK {
            let d = rms_denominator::<CENTERED>(&c, g[k], &mut v[k], a, k);
            denominators[k] = d;
            // `&`, not `&&`: reading every lane keeps the check in plain vector code.
            unchanged &= (g[k].to_bits() == 0) & (d > 0.0) & !is_subnormal(w[k]) & !w[k].is_nan();
        }
        if unchanged {
            continue;
        }
        let m: &mut [f32] = if MOMENTUM {
            &mut momentum[block]
        } else {
            &mut []
        };
        for k in 0..RMS_BLOCK {
            rms_apply::<MOMENTUM>(&c, g[k], denominators[k], &mut w[k], m, k);
        }
    }
    for i in full..n {
        let a: &mut [f32] = if CENTERED {
            &mut average_gradient[i..=i]
        } else {
            &mut []
        };
        let d = rms_denominator::<CENTERED>(&c, grad[i], &mut velocity[i], a, 0);
        let m: &mut [f32] = if MOMENTUM {
            &mut momentum[i..=i]
        } else {
            &mut []
        };
        rms_apply::<MOMENTUM>(&c, grad[i], d, &mut var[i], m, 0);
    }
}

/// Elements per block of [`rmsprop`]'s zero-gradient check (16 floats, a cache line's worth).
const RMS_BLOCK: usize = 16;

/// Updates the velocity (and average gradient, `a[k]`, when centered) of one element and
/// returns the denominator under the square root.
#[inline(always)]
fn rms_denominator<const CENTERED: bool>(
    c: &RmsPropScalars,
    g: f32,
    velocity: &mut f32,
    a: &mut [f32],
    k: usize,
) -> f32 {
    let v = c.rho * *velocity + c.one_minus_rho * (g * g);
    *velocity = v;
    if CENTERED {
        let avg = c.rho * a[k] + c.one_minus_rho * g;
        a[k] = avg;
        v - avg * avg + c.epsilon
    } else {
        v + c.epsilon
    }
}

/// Applies one element's increment (through its momentum, `m[k]`, when there is one).
#[inline(always)]
fn rms_apply<const MOMENTUM: bool>(
    c: &RmsPropScalars,
    g: f32,
    denominator: f32,
    var: &mut f32,
    m: &mut [f32],
    k: usize,
) {
    let increment = (c.lr * g) / denominator.sqrt();
    if MOMENTUM {
        let mk = c.momentum * m[k] + increment;
        m[k] = mk;
        *var -= mk;
    } else {
        *var -= increment;
    }
}

/// Whether `x` is subnormal, from its bits (comparisons would see it as 0 with
/// denormals-are-zero set, as they are during a step).
#[inline(always)]
fn is_subnormal(x: f32) -> bool {
    let bits = x.to_bits();
    bits & 0x7f80_0000 == 0 && bits & 0x007f_ffff != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const W0: [f32; 3] = [1.0, -2.0, 3.0];
    const G: [[f32; 3]; 3] = [[0.5, -1.0, 2.0], [0.3, 0.8, -1.5], [-0.2, 0.4, 1.0]];

    fn config(kind: OptimizerKind) -> OptimizerConfig {
        OptimizerConfig {
            kind,
            weight_decay: None,
            clipnorm: None,
            clipvalue: None,
            global_clipnorm: None,
        }
    }

    fn parse(v: Value) -> OptimizerConfig {
        OptimizerConfig::from_json(&v).unwrap()
    }

    /// Three steps of `config` from `W0` with the gradients `grads`.
    fn run_with(
        config: &OptimizerConfig,
        lr: f32,
        grads: &[[f32; 3]; 3],
    ) -> (Vec<f32>, OptimizerState) {
        let mut w = W0.to_vec();
        let mut state = OptimizerState::new(config, &[3]);
        for g in grads {
            let mut g = g.to_vec();
            apply_gradients(
                config,
                &mut state,
                lr,
                &mut [&mut w[..]],
                &mut [Gradient::Dense(&mut g[..])],
            )
            .unwrap();
        }
        assert_eq!(state.iterations, 3);
        (w, state)
    }

    fn run(config: &OptimizerConfig, lr: f32) -> (Vec<f32>, OptimizerState) {
        run_with(config, lr, &G)
    }

    fn w0() -> [f64; 3] {
        W0.map(f64::from)
    }

    fn g64(g: &[f32; 3]) -> [f64; 3] {
        g.map(f64::from)
    }

    #[track_caller]
    fn assert_close(what: &str, got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let err = (f64::from(g) - w).abs();
            assert!(
                err <= 1e-6 * w.abs() + 1e-12,
                "{what}[{i}]: got {g}, want {w} (rel err {:e})",
                err / w.abs()
            );
        }
    }

    #[test]
    fn sgd_matches_keras() {
        let (w, state) = run(
            &config(OptimizerKind::Sgd {
                momentum: 0.0,
                nesterov: false,
            }),
            0.1,
        );
        let lr = 0.1;
        let mut want = w0();
        for g in &G {
            let g = g64(g);
            for i in 0..3 {
                want[i] -= g[i] * lr;
            }
        }
        assert_close("w", &w, &want);
        assert!(state.variables[0].slots.is_empty());
    }

    #[test]
    fn sgd_momentum_matches_keras() {
        let (w, state) = run(
            &config(OptimizerKind::Sgd {
                momentum: 0.9,
                nesterov: false,
            }),
            0.1,
        );
        let (lr, mu) = (0.1, 0.9);
        let (mut want, mut m) = (w0(), [0.0f64; 3]);
        for g in &G {
            let g = g64(g);
            for i in 0..3 {
                m[i] = m[i] * mu - g[i] * lr;
                want[i] += m[i];
            }
        }
        assert_close("w", &w, &want);
        assert_close("momentum", &state.variables[0].slots[0], &m);
    }

    #[test]
    fn sgd_nesterov_matches_keras() {
        let (w, state) = run(
            &config(OptimizerKind::Sgd {
                momentum: 0.9,
                nesterov: true,
            }),
            0.1,
        );
        let (lr, mu) = (0.1, 0.9);
        let (mut want, mut m) = (w0(), [0.0f64; 3]);
        for g in &G {
            let g = g64(g);
            for i in 0..3 {
                m[i] = m[i] * mu - g[i] * lr;
                want[i] += m[i] * mu - g[i] * lr;
            }
        }
        assert_close("w", &w, &want);
        assert_close("momentum", &state.variables[0].slots[0], &m);
    }

    #[test]
    fn rmsprop_matches_keras() {
        let kind = OptimizerKind::RmsProp {
            rho: 0.9,
            momentum: 0.0,
            epsilon: 1e-7,
            centered: false,
        };
        let (w, state) = run(&config(kind), 0.01);
        let (lr, rho, eps) = (0.01, 0.9, 1e-7);
        let (mut want, mut vel) = (w0(), [0.0f64; 3]);
        for g in &G {
            let g = g64(g);
            for i in 0..3 {
                vel[i] = rho * vel[i] + (1.0 - rho) * g[i] * g[i];
                want[i] -= lr * g[i] / (vel[i] + eps).sqrt();
            }
        }
        assert_close("w", &w, &want);
        assert_close("velocity", &state.variables[0].slots[0], &vel);
    }

    /// Blocks whose gradient is all +0 skip the variable's update; the variable and every
    /// slot must keep the bits of the plain per-element formula, with subnormals flushed as
    /// in a step: for -0, subnormal, infinite and NaN variables, -0 gradients, a partial last
    /// block, a negative learning rate, epsilon 0 (0 / 0 in a block that never gets a
    /// gradient), centered, and with momentum (which never skips).
    #[test]
    fn rmsprop_zero_gradient_blocks_keep_the_bits_of_the_full_update() {
        let n = 16 * 12 + 5;
        let mut w0: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01)
            .collect();
        w0[3] = -0.0;
        w0[21] = f32::INFINITY;
        w0[40] = f32::from_bits(0x8000_0007); // negative subnormal, nonzero-gradient block
                                              // Blocks 3, 5, 9 and 10 never get a nonzero gradient; each holds one kind of value
                                              // that must not be skipped (a skipped block would keep it as it is).
        w0[50] = f32::from_bits(9); // subnormal
        w0[83] = -0.0; // with a -0 gradient at every step, in an otherwise +0 block
        w0[148] = f32::from_bits(0x7fa0_0000); // signalling NaN
        w0[161] = -0.0; // becomes +0 with a negative learning rate
        let grads: Vec<Vec<f32>> = (0..4)
            .map(|step| {
                (0..n)
                    .map(|i| {
                        let block = i / 16;
                        if i == 83 || (block == 7 && i % 16 == 2) {
                            -0.0
                        } else if [3, 5, 9, 10].contains(&block)
                            || step % 2 == 0 && (block % 2 == 1 || i >= 16 * 12)
                        {
                            0.0
                        } else {
                            ((i * 13 + step * 7) % 23) as f32 * 0.05 - 0.5
                        }
                    })
                    .collect()
            })
            .collect();
        let rho = 0.9f32;
        let omr = (1.0 - py_float(rho)) as f32;
        let cases = [
            // (lr, epsilon, momentum, centered)
            (0.01f32, 1e-7f32, 0.0f32, false),
            (0.01, 1e-7, 0.0, true),
            (-0.01, 1e-7, 0.0, false),
            (0.01, 0.0, 0.0, false),
            (0.01, 1e-7, 0.5, false),
            (0.01, 1e-7, 0.5, true),
        ];
        for (lr, eps, mu, centered) in cases {
            let kind = OptimizerKind::RmsProp {
                rho,
                momentum: mu,
                epsilon: eps,
                centered,
            };
            let cfg = config(kind);
            let (got, state, want, slots) =
                pyfuncnet_kernels::fpenv::with_subnormals_flushed(|| {
                    let mut state = OptimizerState::new(&cfg, &[n]);
                    let mut got = w0.clone();
                    for g in &grads {
                        let mut g = g.clone();
                        apply_gradients(
                            &cfg,
                            &mut state,
                            lr,
                            &mut [&mut got[..]],
                            &mut [Gradient::Dense(&mut g[..])],
                        )
                        .unwrap();
                    }
                    let mut want = w0.clone();
                    let (mut vel, mut mom, mut avg) =
                        (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
                    for g in &grads {
                        for i in 0..n {
                            // Opaque, so the reference runs under the flush like the kernel.
                            let gi = std::hint::black_box(g[i]);
                            vel[i] = rho * vel[i] + omr * (gi * gi);
                            let d = if centered {
                                avg[i] = rho * avg[i] + omr * gi;
                                vel[i] - avg[i] * avg[i] + eps
                            } else {
                                vel[i] + eps
                            };
                            let increment = (lr * gi) / d.sqrt();
                            if mu > 0.0 {
                                mom[i] = mu * mom[i] + increment;
                                want[i] -= mom[i];
                            } else {
                                want[i] -= increment;
                            }
                        }
                    }
                    let mut slots = vec![vel];
                    if mu > 0.0 {
                        slots.push(mom);
                    }
                    if centered {
                        slots.push(avg);
                    }
                    (got, state, want, slots)
                });
            let what = format!("lr {lr}, epsilon {eps}, momentum {mu}, centered {centered}");
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            for i in 0..n {
                assert_eq!(
                    got[i].to_bits(),
                    want[i].to_bits(),
                    "{what}: w[{i}]: {} vs {}",
                    got[i],
                    want[i]
                );
            }
            assert_eq!(state.variables[0].slots.len(), slots.len(), "{what}");
            for (k, (s, r)) in state.variables[0].slots.iter().zip(&slots).enumerate() {
                assert_eq!(bits(s), bits(r), "{what}: slot {k}");
            }
            if (lr, eps, mu) == (0.01, 1e-7, 0.0) {
                assert!(want[21].is_infinite());
                assert_eq!(
                    want[50].to_bits(),
                    0,
                    "the flush zeroes a subnormal variable"
                );
                assert_eq!(want[83].to_bits(), 0, "-0 - -0 is +0");
                assert!(want[148].is_nan() && want[148].to_bits() != w0[148].to_bits());
            }
        }
    }

    #[test]
    fn rmsprop_centered_momentum_matches_keras() {
        let kind = OptimizerKind::RmsProp {
            rho: 0.9,
            momentum: 0.5,
            epsilon: 1e-7,
            centered: true,
        };
        let (w, state) = run(&config(kind), 0.01);
        let (lr, rho, mu, eps) = (0.01, 0.9, 0.5, 1e-7);
        let (mut want, mut vel, mut mom, mut avg) = (w0(), [0.0f64; 3], [0.0f64; 3], [0.0f64; 3]);
        for g in &G {
            let g = g64(g);
            for i in 0..3 {
                vel[i] = rho * vel[i] + (1.0 - rho) * g[i] * g[i];
                avg[i] = rho * avg[i] + (1.0 - rho) * g[i];
                let increment = lr * g[i] / (vel[i] - avg[i] * avg[i] + eps).sqrt();
                mom[i] = mu * mom[i] + increment;
                want[i] -= mom[i];
            }
        }
        assert_close("w", &w, &want);
        let s = &state.variables[0].slots;
        assert_close("velocity", &s[0], &vel);
        assert_close("momentum", &s[1], &mom);
        assert_close("average_gradient", &s[2], &avg);
    }

    /// Adam written out from Keras's adam.py, in f64.
    fn adam_reference(
        lr: f64,
        grads: &[[f32; 3]; 3],
        amsgrad: bool,
        decay: f64,
    ) -> ([f64; 3], [[f64; 3]; 3]) {
        // `1 - self.beta_1` is folded in Python doubles; the powers use float32-cast betas.
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-7);
        let (b1_cast, b2_cast) = (f64::from(0.9f32), f64::from(0.999f32));
        let (mut w, mut m, mut v, mut v_hat) = (w0(), [0.0f64; 3], [0.0f64; 3], [0.0f64; 3]);
        for (step, g) in grads.iter().enumerate() {
            let g = g64(g);
            let t = (step + 1) as f64;
            let alpha = lr * (1.0 - b2_cast.powf(t)).sqrt() / (1.0 - b1_cast.powf(t));
            for i in 0..3 {
                w[i] -= w[i] * decay * lr;
                m[i] += (g[i] - m[i]) * (1.0 - b1);
                v[i] += (g[i] * g[i] - v[i]) * (1.0 - b2);
                v_hat[i] = v_hat[i].max(v[i]);
                let denom = if amsgrad { v_hat[i] } else { v[i] };
                w[i] -= m[i] * alpha / (denom.sqrt() + eps);
            }
        }
        (w, [m, v, v_hat])
    }

    #[test]
    fn adam_matches_keras() {
        let kind = OptimizerKind::Adam {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
            amsgrad: false,
        };
        let (w, state) = run(&config(kind), 0.01);
        let (want, [m, v, _]) = adam_reference(0.01, &G, false, 0.0);
        assert_close("w", &w, &want);
        assert_close("momentum", &state.variables[0].slots[0], &m);
        assert_close("velocity", &state.variables[0].slots[1], &v);
    }

    #[test]
    fn adam_amsgrad_matches_keras() {
        // The last gradients are small, so `velocity` decays below its maximum.
        let grads = [[0.5, -1.0, 2.0], [0.3, 0.8, -1.5], [0.01, -0.02, 0.03]];
        let kind = OptimizerKind::Adam {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
            amsgrad: true,
        };
        let (w, state) = run_with(&config(kind), 0.1, &grads);
        let (want, [m, v, v_hat]) = adam_reference(0.1, &grads, true, 0.0);
        assert!(
            v_hat.iter().zip(&v).all(|(a, b)| a > b),
            "the test must exercise velocity_hat"
        );
        let (plain, _) = adam_reference(0.1, &grads, false, 0.0);
        assert!(
            (plain[0] - want[0]).abs() > 1e-5 * want[0].abs(),
            "AMSGrad must change the result"
        );
        assert_close("w", &w, &want);
        let s = &state.variables[0].slots;
        assert_close("momentum", &s[0], &m);
        assert_close("velocity", &s[1], &v);
        assert_close("velocity_hat", &s[2], &v_hat);
    }

    #[test]
    fn adamw_matches_keras() {
        let config = parse(json!({"name": "adamw"}));
        assert_eq!(config.weight_decay, Some(0.004));
        let (w, _) = run(&config, 0.01);
        let (want, _) = adam_reference(0.01, &G, false, 0.004);
        assert_close("w", &w, &want);
    }

    #[test]
    fn adagrad_matches_keras() {
        let config = config(OptimizerKind::Adagrad {
            initial_accumulator_value: 0.1,
            epsilon: 1e-7,
        });
        assert_eq!(
            OptimizerState::new(&config, &[2]).variables[0].slots,
            vec![vec![0.1f32; 2]]
        );
        let (w, state) = run(&config, 0.1);
        let (lr, eps) = (0.1, 1e-7);
        let mut want = w0();
        let mut acc = [f64::from(0.1f32); 3];
        for g in &G {
            let g = g64(g);
            for i in 0..3 {
                acc[i] += g[i] * g[i];
                want[i] -= lr * g[i] / (acc[i] + eps).sqrt();
            }
        }
        assert_close("w", &w, &want);
        assert_close("accumulator", &state.variables[0].slots[0], &acc);
    }

    #[test]
    fn adadelta_matches_keras() {
        let (w, state) = run(
            &config(OptimizerKind::Adadelta {
                rho: 0.95,
                epsilon: 1e-7,
            }),
            1.0,
        );
        let (lr, rho, eps) = (1.0, 0.95, 1e-7);
        let (mut want, mut acc_grad, mut acc_delta) = (w0(), [0.0f64; 3], [0.0f64; 3]);
        for g in &G {
            let g = g64(g);
            for i in 0..3 {
                acc_grad[i] = rho * acc_grad[i] + (1.0 - rho) * g[i] * g[i];
                let delta = -((acc_delta[i] + eps).sqrt() * g[i] / (acc_grad[i] + eps).sqrt());
                acc_delta[i] = rho * acc_delta[i] + (1.0 - rho) * delta * delta;
                want[i] += lr * delta;
            }
        }
        assert_close("w", &w, &want);
        assert_close("accumulated_grad", &state.variables[0].slots[0], &acc_grad);
        assert_close(
            "accumulated_delta_var",
            &state.variables[0].slots[1],
            &acc_delta,
        );
    }

    #[test]
    fn adamax_matches_keras() {
        let kind = OptimizerKind::Adamax {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
        };
        let (w, state) = run(&config(kind), 0.01);
        let (lr, b1, b2, eps) = (0.01, 0.9f64, 0.999, 1e-7);
        let (mut want, mut m, mut u) = (w0(), [0.0f64; 3], [0.0f64; 3]);
        for (step, g) in G.iter().enumerate() {
            let g = g64(g);
            let b1_power = f64::from(0.9f32).powf((step + 1) as f64);
            for i in 0..3 {
                m[i] += (g[i] - m[i]) * (1.0 - b1);
                u[i] = (b2 * u[i]).max(g[i].abs());
                want[i] -= lr * m[i] / ((1.0 - b1_power) * (u[i] + eps));
            }
        }
        assert_close("w", &w, &want);
        assert_close("momentum", &state.variables[0].slots[0], &m);
        assert_close("norm", &state.variables[0].slots[1], &u);
    }

    #[test]
    fn nadam_matches_keras_with_one_u_product_per_optimizer() {
        // Two variables: Keras multiplies `u_product` once per step, not once per variable.
        let config = config(OptimizerKind::Nadam {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
        });
        let mut a = W0.to_vec();
        let mut b = vec![0.5f32, -0.25];
        let mut state = OptimizerState::new(&config, &[3, 2]);
        assert_eq!(state.variables[1].scalars, vec![1.0]);
        let grads_b = [[0.1f32, -0.3], [0.2, 0.7], [-0.4, 0.05]];
        for s in 0..3 {
            let (mut ga, mut gb) = (G[s].to_vec(), grads_b[s].to_vec());
            apply_gradients(
                &config,
                &mut state,
                0.01,
                &mut [&mut a[..], &mut b[..]],
                &mut [Gradient::Dense(&mut ga[..]), Gradient::Dense(&mut gb[..])],
            )
            .unwrap();
        }

        // nadam.py casts beta_1, beta_2 and the 0.96 decay to float32 before any arithmetic.
        let (lr, eps) = (0.01, 1e-7);
        let (b1, b2, decay) = (f64::from(0.9f32), f64::from(0.999f32), f64::from(0.96f32));
        let mut w: [Vec<f64>; 2] = [w0().to_vec(), vec![0.5, -0.25]];
        let mut m: [Vec<f64>; 2] = [vec![0.0; 3], vec![0.0; 2]];
        let mut v = m.clone();
        let mut u_product = 1.0f64;
        for s in 0..3 {
            let t = (s + 1) as f64;
            let u_t = b1 * (1.0 - 0.5 * decay.powf(t));
            let u_t_1 = b1 * (1.0 - 0.5 * decay.powf(t + 1.0));
            u_product *= u_t;
            let u_product_t_1 = u_product * u_t_1;
            let g: [Vec<f64>; 2] = [g64(&G[s]).to_vec(), grads_b[s].map(f64::from).to_vec()];
            for k in 0..2 {
                for i in 0..g[k].len() {
                    m[k][i] += (g[k][i] - m[k][i]) * (1.0 - b1);
                    v[k][i] += (g[k][i] * g[k][i] - v[k][i]) * (1.0 - b2);
                    let m_hat = u_t_1 * m[k][i] / (1.0 - u_product_t_1)
                        + (1.0 - u_t) * g[k][i] / (1.0 - u_product);
                    let v_hat = v[k][i] / (1.0 - b2.powf(t));
                    w[k][i] -= m_hat * lr / (v_hat.sqrt() + eps);
                }
            }
        }
        assert_close("a", &a, &w[0]);
        assert_close("b", &b, &w[1]);
        assert_close("momentum a", &state.variables[0].slots[0], &m[0]);
        assert_close("velocity b", &state.variables[1].slots[1], &v[1]);
        for vs in &state.variables {
            assert!((vs.scalars[0] - u_product).abs() <= 1e-6 * u_product);
        }
    }

    #[test]
    fn weight_decay_is_applied_before_the_update() {
        let mut config = config(OptimizerKind::Sgd {
            momentum: 0.9,
            nesterov: false,
        });
        config.weight_decay = Some(0.1);
        let (w, _) = run(&config, 0.1);
        let (lr, mu, wd) = (0.1, 0.9, f64::from(0.1f32));
        let (mut want, mut m) = (w0(), [0.0f64; 3]);
        for g in &G {
            let g = g64(g);
            for i in 0..3 {
                want[i] -= want[i] * wd * lr;
                m[i] = m[i] * mu - g[i] * lr;
                want[i] += m[i];
            }
        }
        assert_close("w", &w, &want);
    }

    /// One plain-SGD step with lr = 1 on two variables; returns (variables, clipped gradients).
    fn clip_step(config: &OptimizerConfig, mut g1: Vec<f32>, mut g2: Vec<f32>) -> [Vec<f32>; 4] {
        let (mut w1, mut w2) = (vec![1.0f32; g1.len()], vec![1.0f32; g2.len()]);
        let mut state = OptimizerState::new(config, &[g1.len(), g2.len()]);
        apply_gradients(
            config,
            &mut state,
            1.0,
            &mut [&mut w1[..], &mut w2[..]],
            &mut [Gradient::Dense(&mut g1[..]), Gradient::Dense(&mut g2[..])],
        )
        .unwrap();
        [w1, w2, g1, g2]
    }

    fn sgd_with(set: impl FnOnce(&mut OptimizerConfig)) -> OptimizerConfig {
        let mut c = config(OptimizerKind::Sgd {
            momentum: 0.0,
            nesterov: false,
        });
        set(&mut c);
        c
    }

    #[test]
    fn clipnorm_clips_each_gradient_by_its_own_norm() {
        let c = sgd_with(|c| c.clipnorm = Some(1.0));
        // Norms 5 (clipped to 1) and 0.5 (kept).
        let [w1, w2, g1, g2] = clip_step(&c, vec![3.0, 4.0], vec![0.3, -0.4]);
        let (want1, want2) = (
            [3.0 / 5.0, 4.0 / 5.0],
            [f64::from(0.3f32), f64::from(-0.4f32)],
        );
        assert_close("g1", &g1, &want1);
        assert_close("g2", &g2, &want2);
        assert_close("w1", &w1, &[1.0 - want1[0], 1.0 - want1[1]]);
        assert_close("w2", &w2, &[1.0 - want2[0], 1.0 - want2[1]]);
    }

    #[test]
    fn global_clipnorm_scales_all_gradients_together() {
        let c = sgd_with(|c| c.global_clipnorm = Some(2.0));
        // Global norm sqrt(9 + 16 + 144) = 13; scale 2 / 13.
        let [w1, w2, g1, g2] = clip_step(&c, vec![3.0, 4.0], vec![12.0]);
        let s = 2.0 / 13.0;
        assert_close("g1", &g1, &[3.0 * s, 4.0 * s]);
        assert_close("g2", &g2, &[12.0 * s]);
        assert_close("w1", &w1, &[1.0 - 3.0 * s, 1.0 - 4.0 * s]);
        assert_close("w2", &w2, &[1.0 - 12.0 * s]);
        // Below the threshold nothing changes.
        let [_, _, g1, _] = clip_step(&c, vec![0.3, 0.4], vec![1.2]);
        assert_close("g1 small", &g1, &[f64::from(0.3f32), f64::from(0.4f32)]);
    }

    #[test]
    fn clipvalue_clips_each_element() {
        let c = sgd_with(|c| c.clipvalue = Some(0.5));
        let [w1, w2, g1, g2] = clip_step(&c, vec![0.3, -0.7], vec![2.0]);
        assert_close("g1", &g1, &[f64::from(0.3f32), -0.5]);
        assert_close("g2", &g2, &[0.5]);
        assert_close("w1", &w1, &[1.0 - f64::from(0.3f32), 1.5]);
        assert_close("w2", &w2, &[0.5]);
    }

    #[test]
    fn a_zero_clip_value_disables_clipping_as_in_keras() {
        let c = sgd_with(|c| c.clipnorm = Some(0.0));
        let [_, _, g1, _] = clip_step(&c, vec![3.0, 4.0], vec![1.0]);
        assert_eq!(g1, vec![3.0, 4.0]);
    }

    #[test]
    fn from_json_defaults_are_keras_3_defaults() {
        let cases = [
            (
                "sgd",
                OptimizerKind::Sgd {
                    momentum: 0.0,
                    nesterov: false,
                },
            ),
            (
                "rmsprop",
                OptimizerKind::RmsProp {
                    rho: 0.9,
                    momentum: 0.0,
                    epsilon: 1e-7,
                    centered: false,
                },
            ),
            (
                "adam",
                OptimizerKind::Adam {
                    beta_1: 0.9,
                    beta_2: 0.999,
                    epsilon: 1e-7,
                    amsgrad: false,
                },
            ),
            (
                "adamw",
                OptimizerKind::AdamW {
                    beta_1: 0.9,
                    beta_2: 0.999,
                    epsilon: 1e-7,
                    amsgrad: false,
                },
            ),
            (
                "adagrad",
                OptimizerKind::Adagrad {
                    initial_accumulator_value: 0.1,
                    epsilon: 1e-7,
                },
            ),
            (
                "adadelta",
                OptimizerKind::Adadelta {
                    rho: 0.95,
                    epsilon: 1e-7,
                },
            ),
            (
                "adamax",
                OptimizerKind::Adamax {
                    beta_1: 0.9,
                    beta_2: 0.999,
                    epsilon: 1e-7,
                },
            ),
            (
                "nadam",
                OptimizerKind::Nadam {
                    beta_1: 0.9,
                    beta_2: 0.999,
                    epsilon: 1e-7,
                },
            ),
        ];
        for (name, kind) in cases {
            let got = parse(json!({ "name": name }));
            let weight_decay = (name == "adamw").then_some(0.004);
            let want = OptimizerConfig {
                weight_decay,
                ..config(kind)
            };
            assert_eq!(got, want, "{name}");
            assert_eq!(parse(got.to_json()), got, "{name} round trip");
            let lr = if name == "sgd" { 0.01 } else { 0.001 };
            assert_eq!(got.kind.default_learning_rate(), lr);
        }
        assert_eq!(parse(json!({"name": "RMSprop"})).kind.name(), "rmsprop");
    }

    #[test]
    fn from_json_reads_a_full_keras_config() {
        let c = parse(json!({
            "name": "adam", "learning_rate": 0.002, "weight_decay": null, "clipnorm": 1.5,
            "global_clipnorm": null, "clipvalue": null, "use_ema": false, "ema_momentum": 0.99,
            "ema_overwrite_frequency": null, "loss_scale_factor": null,
            "gradient_accumulation_steps": null, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-08,
            "amsgrad": true
        }));
        let kind = OptimizerKind::Adam {
            beta_1: 0.8,
            beta_2: 0.99,
            epsilon: 1e-8,
            amsgrad: true,
        };
        assert_eq!(
            c,
            OptimizerConfig {
                clipnorm: Some(1.5),
                ..config(kind)
            }
        );
        assert_eq!(c.slots_per_variable(), 3);
        assert_eq!(c.slot_names(), ["momentum", "velocity", "velocity_hat"]);
        assert_eq!(c.to_json()["beta_1"], json!(0.8));
    }

    #[test]
    fn slot_counts_follow_keras_build() {
        let count = |v: Value| parse(v).slots_per_variable();
        assert_eq!(count(json!({"name": "sgd"})), 0);
        assert_eq!(count(json!({"name": "sgd", "momentum": 0.5})), 1);
        assert_eq!(count(json!({"name": "rmsprop"})), 1);
        assert_eq!(
            count(json!({"name": "rmsprop", "momentum": 0.5, "centered": true})),
            3
        );
        assert_eq!(count(json!({"name": "rmsprop", "centered": true})), 2);
        assert_eq!(count(json!({"name": "adam"})), 2);
        assert_eq!(count(json!({"name": "adagrad"})), 1);
        assert_eq!(count(json!({"name": "adadelta"})), 2);
        assert_eq!(count(json!({"name": "adamax"})), 2);
        assert_eq!(count(json!({"name": "nadam"})), 2);
        for name in OPTIMIZER_NAMES {
            let c = parse(json!({ "name": name }));
            assert_eq!(c.slot_names().len(), c.slots_per_variable(), "{name}");
            assert_eq!(
                c.slot_initial_values().len(),
                c.slots_per_variable(),
                "{name}"
            );
        }
    }

    #[test]
    fn from_json_rejects_bad_configs_naming_the_argument() {
        let cases = [
            (json!({"name": "adam", "betta_1": 0.9}), "betta_1"),
            (json!({"name": "adam", "epsilon": -1e-7}), "epsilon"),
            (json!({"name": "rmsprop", "rho": 1.5}), "rho"),
            (json!({"name": "sgd", "momentum": -0.1}), "momentum"),
            (
                json!({"name": "adam", "clipnorm": 1.0, "clipvalue": 0.5}),
                "clipvalue",
            ),
            (
                json!({"name": "adam", "clipnorm": 0.0, "global_clipnorm": 1.0}),
                "global_clipnorm",
            ),
            (json!({"name": "adam", "amsgrad": 1}), "amsgrad"),
            (json!({"name": "adam", "beta_1": "0.9"}), "beta_1"),
            (
                json!({"name": "adamw", "weight_decay": null}),
                "weight_decay",
            ),
            (
                json!({"name": "adam", "weight_decay": -0.1}),
                "weight_decay",
            ),
            (json!({"name": "adam", "use_ema": true}), "use_ema"),
            (
                json!({"name": "adam", "gradient_accumulation_steps": 4}),
                "gradient_accumulation_steps",
            ),
            (json!({"name": "adam", "decay": 0.01}), "decay"),
            (json!({"name": "adagrad", "momentum": 0.9}), "momentum"),
            (json!({"name": "ftrl"}), "ftrl"),
            (json!({"beta_1": 0.9}), "name"),
            (json!([1, 2]), "object"),
        ];
        for (value, needle) in cases {
            let err = OptimizerConfig::from_json(&value).unwrap_err();
            assert!(err.contains(needle), "{value}: {err}");
        }
        // Keras's legacy `decay: 0.0` is accepted, as Keras 3 does.
        parse(json!({"name": "sgd", "decay": 0.0}));
    }

    #[test]
    fn errors_leave_variables_gradients_and_state_unchanged() {
        let good = OptimizerConfig {
            clipvalue: Some(0.1),
            ..parse(json!({"name": "adam"}))
        };
        let mut state = OptimizerState::new(&good, &[3, 2]);
        // One good step so the state is not trivial.
        let (mut a, mut b) = (W0.to_vec(), vec![1.0f32, 2.0]);
        let (mut ga, mut gb) = (G[0].to_vec(), vec![0.5f32, 0.5]);
        apply_gradients(
            &good,
            &mut state,
            0.01,
            &mut [&mut a[..], &mut b[..]],
            &mut [Gradient::Dense(&mut ga[..]), Gradient::Dense(&mut gb[..])],
        )
        .unwrap();

        let bad_config = config(OptimizerKind::Adam {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: -1.0,
            amsgrad: false,
        });
        let (a0, b0, state0) = (a.clone(), b.clone(), state.clone());
        let (ga0, gb0) = (G[1].to_vec(), vec![0.5f32, 0.5]);
        let attempts: [(&OptimizerConfig, f32, usize, usize, &str); 5] = [
            (&good, 0.01, 2, 2, "gradient 1"),  // second gradient too short
            (&good, 0.01, 2, 0, "2 variables"), // gradient count
            (&good, f32::NAN, 2, 2, "learning rate"),
            (&bad_config, 0.01, 2, 2, "epsilon"),
            (&good, 0.01, 1, 1, "built for 2 variables"), // one variable, state for two
        ];
        for (config, lr, n_vars, n_grads, needle) in attempts {
            let (mut ga, mut gb) = (ga0.clone(), gb0.clone());
            if needle == "gradient 1" {
                gb.pop();
            }
            let mut vars: Vec<&mut [f32]> = vec![&mut a[..], &mut b[..]];
            vars.truncate(n_vars);
            let mut grads: Vec<Gradient> =
                vec![Gradient::Dense(&mut ga[..]), Gradient::Dense(&mut gb[..])];
            grads.truncate(n_grads);
            let err = apply_gradients(config, &mut state, lr, &mut vars, &mut grads).unwrap_err();
            assert!(err.contains(needle), "{needle}: {err}");
            assert_eq!(ga, ga0, "{needle}: gradient 0 modified");
            assert_eq!(a, a0, "{needle}: variable 0 modified");
            assert_eq!(b, b0, "{needle}: variable 1 modified");
            assert_eq!(state, state0, "{needle}: state modified");
        }
        // A state whose slot is the wrong length.
        let mut broken = state0.clone();
        broken.variables[1].slots[0].push(0.0);
        let (mut ga, mut gb) = (ga0.clone(), gb0.clone());
        let err = apply_gradients(
            &good,
            &mut broken,
            0.01,
            &mut [&mut a[..], &mut b[..]],
            &mut [Gradient::Dense(&mut ga[..]), Gradient::Dense(&mut gb[..])],
        )
        .unwrap_err();
        assert!(err.contains("slot 0 of variable 1"), "{err}");
        assert_eq!((a, b, ga), (a0, b0, ga0));
    }

    #[test]
    fn no_variables_is_a_no_op() {
        let c = parse(json!({"name": "nadam"}));
        let mut state = OptimizerState::new(&c, &[]);
        apply_gradients(&c, &mut state, 0.1, &mut [], &mut []).unwrap();
        assert_eq!(state.iterations, 0);
    }

    /// A gathered table's gradient as [`RowSums`] gives, bit for bit, what the dense
    /// gradient from the scatter-add of `take_grad` gives, for every optimizer and every
    /// clipping (including a NaN norm, which turns every zero into NaN), with repeated
    /// indices, a row length that does not divide the pieces the update is cut into, and
    /// a dense variable beside it.
    #[test]
    fn row_sums_update_like_the_dense_scatter_add() {
        use pyfuncnet_kernels::layout::scatter_add;
        let (rows, row_len) = (700, 100);
        let len = rows * row_len;
        assert!(len > 2 * CHUNK && !CHUNK.is_multiple_of(row_len));
        let wave = |n: usize, seed: f32| -> Vec<f32> {
            (0..n)
                .map(|i| ((i as f32 * 0.37 + seed).sin()) * 1.5)
                .collect()
        };
        // Steps gather different rows, some several times, some at the table's ends.
        let steps: [Vec<i32>; 3] = [
            vec![3, 699, 3, 0, 350, 3, 699],
            vec![1, 2, 3, 327, 328, 656],
            vec![655, 655, 655, 0],
        ];
        let clippings = [
            (None, None, None),
            (Some(0.5), None, None),
            (None, Some(0.7), None),
            (None, None, Some(0.05)),
        ];
        for name in OPTIMIZER_NAMES {
            for (case, &(clipnorm, global_clipnorm, clipvalue)) in clippings.iter().enumerate() {
                for nan in [false, true] {
                    if nan && clipnorm.is_none() && global_clipnorm.is_none() {
                        continue;
                    }
                    let c = OptimizerConfig {
                        weight_decay: Some(0.01),
                        clipnorm,
                        global_clipnorm,
                        clipvalue,
                        ..parse(json!({ "name": name }))
                    };
                    let what = format!("{name}, clipping case {case}, nan {nan}");
                    let (mut table_a, mut other_a) = (wave(len, 0.1), wave(37, 0.2));
                    let (mut table_b, mut other_b) = (table_a.clone(), other_a.clone());
                    let mut state_a = OptimizerState::new(&c, &[len, 37]);
                    let mut state_b = state_a.clone();
                    let mut sums = RowSums::new(rows, row_len).unwrap();
                    for (t, indices) in steps.iter().enumerate() {
                        let mut dy = wave(indices.len() * row_len, t as f32);
                        if nan && t == 1 {
                            dy[5] = f32::NAN;
                        }
                        let g_other = wave(37, 3.0 + t as f32);
                        let mut dense = vec![0.0; len];
                        scatter_add("test", &dy, indices, 1, rows, row_len, &mut dense).unwrap();
                        let mut g = g_other.clone();
                        apply_gradients(
                            &c,
                            &mut state_a,
                            0.01,
                            &mut [&mut table_a[..], &mut other_a[..]],
                            &mut [Gradient::Dense(&mut dense), Gradient::Dense(&mut g)],
                        )
                        .unwrap();
                        sums.set(indices, &dy).unwrap();
                        let mut g = g_other.clone();
                        apply_gradients(
                            &c,
                            &mut state_b,
                            0.01,
                            &mut [&mut table_b[..], &mut other_b[..]],
                            &mut [Gradient::Rows(&mut sums), Gradient::Dense(&mut g)],
                        )
                        .unwrap();
                        let same = |x: &[f32], y: &[f32]| {
                            x.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits())
                        };
                        assert!(same(&table_a, &table_b), "{what}: table after step {t}");
                        assert!(same(&other_a, &other_b), "{what}: other after step {t}");
                        for (sa, sb) in state_a.variables.iter().zip(&state_b.variables) {
                            for (a, b) in sa.slots.iter().zip(&sb.slots) {
                                assert!(same(a, b), "{what}: slots after step {t}");
                            }
                        }
                        assert_eq!(state_a.iterations, state_b.iterations);
                    }
                    if nan {
                        assert!(table_b.iter().all(|x| x.is_nan()), "{what}: NaN everywhere");
                    }
                }
            }
        }
    }

    /// Steps that put off the updates of the rows they did not gather, then settle, leave the
    /// table and its slots bitwise where updating every row at every step does: with each
    /// optimizer that may put updates off (and ones that may not), with clipping, with a step
    /// that gathers too many rows or has a negative learning rate (both update every row), with
    /// subnormal, signed-zero and NaN weights and subnormal and signed-zero slots, under the
    /// flush of subnormals the steps run with; a run that begins with a negative or NaN slot
    /// updates every row.
    #[test]
    fn put_off_updates_settle_to_the_bits_of_updating_every_row() {
        use pyfuncnet_kernels::layout::scatter_add;
        let rows = 240;
        let configs = [
            json!({ "name": "rmsprop", "learning_rate": 0.01 }),
            json!({ "name": "rmsprop", "learning_rate": 0.05, "rho": 0.5, "epsilon": 0.0 }),
            json!({ "name": "rmsprop", "learning_rate": 0.05, "rho": 0.0 }),
            json!({ "name": "rmsprop", "learning_rate": 0.01, "global_clipnorm": 0.3 }),
            json!({ "name": "rmsprop", "learning_rate": 0.01, "clipnorm": 0.2 }),
            json!({ "name": "sgd", "learning_rate": 0.1 }),
            json!({ "name": "adagrad", "learning_rate": 0.1 }),
            json!({ "name": "adagrad", "learning_rate": 0.1, "clipvalue": 0.01 }),
            json!({ "name": "adam", "learning_rate": 0.01 }),
        ];
        // Steps gather a few rows (once or repeatedly), all rows, or none of the last ones.
        let few = |t: usize| -> Vec<i32> {
            (0..12)
                .map(|k| ((t * 37 + k * k * 11) % 200) as i32)
                .collect()
        };
        // Rows of 3,000 split the gathered rows' updates and the settling into bands (one
        // config, to keep the test quick).
        for row_len in [1, 64, 70, 3000] {
            for (c, json) in configs.iter().enumerate() {
                if row_len == 3000 && c > 0 {
                    continue;
                }
                let config = parse(json.clone());
                // Step 7 gathers every row; steps 4 and 9 too many rows to put the others
                // off (which then take the zero-gradient step as a replay does, but not from
                // the bad slots that step 9 starts from); step 14's learning rate is negative.
                let many: Vec<i32> = (0..100).chain(40..60).collect();
                let steps: Vec<(Vec<i32>, f32)> = (0..16)
                    .map(|t| match t {
                        7 => ((0..rows as i32).collect(), 0.01),
                        4 | 9 => (many.clone(), 0.02),
                        14 => (few(t), -0.01),
                        _ => (few(t), 0.01 + t as f32 * 1e-3),
                    })
                    .collect();
                let len = rows * row_len;
                let mut table: Vec<f32> =
                    (0..len).map(|i| ((i as f32 * 0.37).sin()) * 1.5).collect();
                let mut state_dense = OptimizerState::new(&config, &[len]);
                let (mut table_dense, mut state_put_off) = (table.clone(), state_dense.clone());
                // Values the replay must treat as the update does, in rows 200.. (gathered at
                // step 7 only), set in both copies before each run; the second run begins
                // with a negative and a NaN slot.
                let row = |r: usize| r * row_len;
                let set_special = |table: &mut [f32], state: &mut OptimizerState, bad: bool| {
                    table[row(3)] = 1e-40;
                    table[row(204)] = 1e-40;
                    table[row(205)] = -0.0;
                    table[len - 1] = f32::NAN;
                    if let Some(slot) = state.variables[0].slots.first_mut() {
                        slot[row(203)] = 1e-39;
                        slot[row(206)] = -0.0;
                        let (negative, nan) = if bad { (-1.0, f32::NAN) } else { (0.5, 0.5) };
                        slot[row(201)] = negative;
                        slot[row(202)] = nan;
                    }
                };
                let what = format!("{json}, rows of {row_len}");
                pyfuncnet_kernels::fpenv::with_subnormals_flushed(|| {
                    let mut sums = RowSums::new(rows, row_len).unwrap();
                    let mut put_off = [false; 3];
                    // Runs of steps, each settled at its end, as `train_batches` does; the
                    // last ends with steps that put updates off.
                    for (r, run) in [0..9, 9..13, 13..16].into_iter().enumerate() {
                        set_special(&mut table, &mut state_put_off, r == 1);
                        set_special(&mut table_dense, &mut state_dense, r == 1);
                        sums.defer_updates();
                        for ((indices, lr), t) in steps[run.clone()].iter().zip(run.clone()) {
                            let dy: Vec<f32> = (0..indices.len() * row_len)
                                .map(|i| ((i as f32 * 0.71 + t as f32).cos()) * 0.1)
                                .collect();
                            let mut dense = vec![0.0; len];
                            scatter_add("test", &dy, indices, 1, rows, row_len, &mut dense)
                                .unwrap();
                            apply_gradients(
                                &config,
                                &mut state_dense,
                                *lr,
                                &mut [&mut table_dense[..]],
                                &mut [Gradient::Dense(&mut dense)],
                            )
                            .unwrap();
                            sums.set(indices, &dy).unwrap();
                            apply_gradients(
                                &config,
                                &mut state_put_off,
                                *lr,
                                &mut [&mut table[..]],
                                &mut [Gradient::Rows(&mut sums)],
                            )
                            .unwrap();
                            put_off[r] |= sums.put_off.is_some();
                        }
                        let iterations = state_put_off.iterations;
                        settle_rows(
                            &mut sums,
                            &mut table,
                            &mut state_put_off.variables[0],
                            iterations,
                        )
                        .unwrap();
                        let same = |x: &[f32], y: &[f32]| {
                            x.iter().zip(y).all(|(a, b)| {
                                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
                            })
                        };
                        assert!(same(&table, &table_dense), "{what}: table after {run:?}");
                        let slots = |s: &OptimizerState| s.variables[0].slots.clone();
                        for (a, b) in slots(&state_put_off).iter().zip(&slots(&state_dense)) {
                            assert!(same(a, b), "{what}: slots after {run:?}");
                        }
                        assert_eq!(state_put_off.iterations, state_dense.iterations);
                    }
                    // The configs that may put updates off do, but SGD alone (no slot) in the
                    // run that begins with bad slots.
                    let may = config.may_put_off_updates();
                    let sgd = json["name"] == "sgd";
                    assert_eq!(
                        put_off,
                        [may, may && sgd, may],
                        "{what}: put off (config {c})"
                    );
                });
            }
        }
    }

    /// `settle_rows` checks the table's size (nothing changes on error) and is a no-op when
    /// nothing was put off.
    #[test]
    fn settle_rows_checks_sizes_and_ignores_tables_not_put_off() {
        let config = parse(json!({ "name": "rmsprop" }));
        let mut state = OptimizerState::new(&config, &[32]);
        let mut sums = RowSums::new(16, 2).unwrap();
        let mut table = [1.0f32; 32];
        settle_rows(&mut sums, &mut table, &mut state.variables[0], 5).unwrap();
        assert_eq!(table, [1.0; 32]);

        sums.defer_updates();
        sums.set(&[1], &[0.5, 0.5]).unwrap();
        apply_gradients(
            &config,
            &mut state,
            0.1,
            &mut [&mut table[..]],
            &mut [Gradient::Rows(&mut sums)],
        )
        .unwrap();
        let before = (table, state.clone());
        let err = settle_rows(&mut sums, &mut table[..4], &mut state.variables[0], 1).unwrap_err();
        assert!(
            err.contains("32 elements") && err.contains("variable of 4"),
            "{err}"
        );
        assert_eq!((table, state), before);
    }

    /// `RowSums::set` checks its indices and lengths before it changes anything, and a
    /// new step forgets the rows of the previous one.
    #[test]
    fn row_sums_check_their_input_and_reset_between_steps() {
        assert!(RowSums::new(u32::MAX as usize, 1).is_none());
        let mut sums = RowSums::new(4, 2).unwrap();
        let err = sums.set(&[1, 4], &[0.0; 4]).unwrap_err();
        assert!(
            err.contains("index 4 at position 1") && err.contains("4 rows"),
            "{err}"
        );
        let err = sums.set(&[-1], &[0.0; 2]).unwrap_err();
        assert!(err.contains("index -1 at position 0"), "{err}");
        let err = sums.set(&[1, 2], &[0.0; 3]).unwrap_err();
        assert!(err.contains("must have 4 elements, got 3"), "{err}");

        sums.set(&[1, 3, 1], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
            .unwrap();
        let mut dense = [9.0; 8];
        sums.write_range(0, &mut dense);
        assert_eq!(dense, [0.0, 0.0, 6.0, 8.0, 0.0, 0.0, 3.0, 4.0]);
        sums.set(&[0], &[-1.0, -2.0]).unwrap();
        sums.write_range(0, &mut dense);
        assert_eq!(dense, [-1.0, -2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        let mut part = [9.0; 3];
        sums.write_range(1, &mut part);
        assert_eq!(part, [-2.0, 0.0, 0.0]);
    }

    /// `RowSums::adopt` takes the rows up to the first repeat and their sums, ignores
    /// both padded tails, hands back its old buffer at the new one's length, and on a
    /// bad row or short buffer leaves a zero gradient and the buffer alone.
    #[test]
    fn row_sums_adopt_the_distinct_rows_sums() {
        let mut sums = RowSums::new(5, 2).unwrap();
        sums.set(&[4, 4], &[1.0, 1.0, 1.0, 1.0]).unwrap();
        // Rows 3, 0, 2, then padding repeating the last; sums padded with values
        // that must not count.
        let mut buffer = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        sums.adopt(&[3, 0, 2, 2, 2], &mut buffer).unwrap();
        assert_eq!(buffer, [2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        let mut dense = [9.0; 10];
        sums.write_range(0, &mut dense);
        assert_eq!(dense, [3.0, 4.0, 0.0, 0.0, 5.0, 6.0, 1.0, 2.0, 0.0, 0.0]);
        // A row that repeats an earlier one (not only the last) ends them too.
        let mut buffer = vec![-1.0, -2.0, -3.0, -4.0, -5.0, -6.0];
        sums.adopt(&[1, 4, 1], &mut buffer).unwrap();
        assert_eq!(buffer.len(), 6);
        sums.write_range(0, &mut dense);
        assert_eq!(
            dense,
            [0.0, 0.0, -1.0, -2.0, 0.0, 0.0, 0.0, 0.0, -3.0, -4.0]
        );

        let mut buffer = vec![7.0; 4];
        let err = sums.adopt(&[1, 5], &mut buffer).unwrap_err();
        assert!(
            err.contains("row 5 at position 1") && err.contains("5 rows"),
            "{err}"
        );
        assert_eq!(buffer, [7.0; 4]);
        sums.write_range(0, &mut dense);
        assert_eq!(dense, [0.0; 10]);
        let err = sums.adopt(&[1, 2, 3], &mut buffer).unwrap_err();
        assert!(
            err.contains("3 distinct rows of 2 need 6 elements, got 4"),
            "{err}"
        );
        assert_eq!(buffer, [7.0; 4]);
        // A row after the first repeat is not read, in range or not.
        sums.adopt(&[0, 0, 9], &mut buffer).unwrap();
        sums.write_range(0, &mut dense);
        assert_eq!(dense, [7.0, 7.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }

    /// Large variables are split into parallel chunks and groups; since the update is
    /// elementwise the result must equal, bit for bit, the same step on one-element variables.
    #[test]
    fn split_work_matches_elementwise_updates_bitwise() {
        let sizes = [3 * CHUNK + 17, 5, CHUNK / 2 + 1, 2 * CHUNK];
        let total: usize = sizes.iter().sum();
        let values = |seed: f32| -> Vec<f32> {
            (0..total)
                .map(|i| ((i as f32 * 0.618 + seed).sin()) * 2.0)
                .collect()
        };
        for name in OPTIMIZER_NAMES {
            let c = OptimizerConfig {
                weight_decay: Some(0.01),
                clipvalue: Some(1.5),
                ..parse(json!({ "name": name }))
            };
            let mut big = values(0.5);
            let mut small = big.clone();
            let mut big_state = OptimizerState::new(&c, &sizes);
            let mut small_state = OptimizerState::new(&c, &vec![1; total]);
            for step in 0..2 {
                let mut g_big = values(step as f32);
                let mut g_small = g_big.clone();
                let mut vars: Vec<&mut [f32]> = Vec::new();
                let mut grads: Vec<Gradient> = Vec::new();
                let (mut rest_v, mut rest_g) = (&mut big[..], &mut g_big[..]);
                for &n in &sizes {
                    let (v, rv) = rest_v.split_at_mut(n);
                    let (g, rg) = rest_g.split_at_mut(n);
                    vars.push(v);
                    grads.push(Gradient::Dense(g));
                    (rest_v, rest_g) = (rv, rg);
                }
                apply_gradients(&c, &mut big_state, 0.05, &mut vars, &mut grads).unwrap();
                let mut vars: Vec<&mut [f32]> = small.chunks_mut(1).collect();
                let mut grads: Vec<Gradient> = g_small.chunks_mut(1).map(Gradient::Dense).collect();
                apply_gradients(&c, &mut small_state, 0.05, &mut vars, &mut grads).unwrap();
                assert_eq!(g_big, g_small, "{name}: clipped gradients");
            }
            assert!(big == small, "{name}: variables differ");
        }
    }

    #[test]
    fn global_clipnorm_on_a_large_variable_hits_the_target_norm() {
        let c = sgd_with(|c| c.global_clipnorm = Some(1.0));
        let n = 3 * CHUNK + 5;
        let mut g: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
        let mut w = vec![0.0f32; n];
        let mut state = OptimizerState::new(&c, &[n]);
        apply_gradients(
            &c,
            &mut state,
            1.0,
            &mut [&mut w[..]],
            &mut [Gradient::Dense(&mut g[..])],
        )
        .unwrap();
        let norm = sum_squares(&g).sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }

    #[test]
    fn py_float_recovers_the_written_decimal() {
        assert_eq!(py_float(0.9), 0.9);
        assert_eq!(py_float(0.999), 0.999);
        assert_eq!(py_float(1e-7), 1e-7);
        assert_eq!(one_minus_py(0.9), 0.1f32);
        assert_ne!(1.0f32 - 0.9f32, 0.1f32);
        assert!(py_float(f32::NAN).is_nan());
    }
}
