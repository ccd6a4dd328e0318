//! Reading a LoRA file's tensors into [`LoraLayer`]s.
//!
//! kohya/sd-scripts names a layer `lora_unet_<module>` (or `lora_te_`, `lora_te1_`,
//! `lora_te2_` for the text encoders) with `_` for every `.`, and stores
//! `.lora_down.weight`, `.lora_up.weight` and the scalar `.alpha`; the scale is
//! `alpha / rank` (1 without an alpha). diffusers/PEFT names it `unet.<module>`
//! (`text_encoder.`, `text_encoder_2.`) with `.lora_A[.weight]` and
//! `.lora_B[.weight]`; its alpha comes from a `.alpha` tensor, else from the
//! `lora_adapter_metadata` diffusers writes (`unet.lora_alpha`,
//! `unet.alpha_pattern`), else it is the rank (scale 1), as diffusers reads it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::{LoraFormat, LoraLayer, ModuleKey};
use crate::error::{Error, Result};
use crate::model::safetensors::SafetensorsReader;
use crate::model::Component;

/// The metadata entry diffusers writes its adapter configs to.
const ADAPTER_METADATA: &str = "lora_adapter_metadata";

/// kohya's key prefixes and the component each adapts.
const KOHYA_PREFIXES: [(&str, Component); 4] = [
    ("lora_unet_", Component::Unet),
    ("lora_te1_", Component::TextEncoder),
    ("lora_te2_", Component::TextEncoder2),
    ("lora_te_", Component::TextEncoder),
];

/// PEFT's key prefixes (the longer first) and the component each adapts.
const PEFT_PREFIXES: [(&str, Component); 3] = [
    ("text_encoder_2.", Component::TextEncoder2),
    ("text_encoder.", Component::TextEncoder),
    ("unet.", Component::Unet),
];

/// Suffixes of adapter kinds this reader does not apply, and their names.
const UNSUPPORTED: [(&str, &str); 8] = [
    (".hada_w1_a", "LoHa"),
    (".hada_w1_b", "LoHa"),
    (".lokr_w1", "LoKr"),
    (".lokr_w1_a", "LoKr"),
    (".lora_mid.weight", "LoCon with a Tucker core (lora_mid)"),
    (".dora_scale", "DoRA"),
    (".lora_magnitude_vector", "DoRA"),
    (".diff", "full weight differences"),
];

/// The parts of one layer found so far.
#[derive(Default)]
struct Parts {
    component: Option<Component>,
    module: Option<ModuleKey>,
    down: Option<String>,
    up: Option<String>,
    alpha: Option<String>,
}

/// What one key is.
#[derive(Clone, Copy)]
enum Role {
    Down,
    Up,
    Alpha,
}

/// The layout of the file at `path` and the components its keys name, from
/// its header alone.
pub(super) fn inspect(path: &Path) -> Result<(LoraFormat, Vec<Component>)> {
    let reader = SafetensorsReader::open(&[path.to_path_buf()])?;
    let mut names: Vec<&str> = reader.names().collect();
    names.sort_unstable();
    let format = match names.first() {
        Some(first) if first.starts_with("lora_") => LoraFormat::Kohya,
        Some(_) => LoraFormat::Peft,
        None => {
            return Err(Error::Lora {
                path: path.to_path_buf(),
                message: "holds no tensors".into(),
            })
        }
    };
    let mut components = Vec::new();
    for name in names {
        let component = split_role(name, format)
            .and_then(|(prefix, _)| module_of(prefix, format))
            .map(|(component, _)| component)
            .ok_or_else(|| Error::Lora {
                path: path.to_path_buf(),
                message: format!("key {name} is not a LoRA key"),
            })?;
        if !components.contains(&component) {
            components.push(component);
        }
    }
    Ok((format, components))
}

/// Reads every layer of the file at `path`.
pub(super) fn read_layers(path: &Path) -> Result<(LoraFormat, Vec<LoraLayer>)> {
    let reader = SafetensorsReader::open(&[path.to_path_buf()])?;
    let invalid = |message: String| Error::Lora {
        path: path.to_path_buf(),
        message,
    };
    let mut names: Vec<&str> = reader.names().collect();
    names.sort_unstable();
    let format = match names.first() {
        Some(first) if first.starts_with("lora_") => LoraFormat::Kohya,
        Some(_) => LoraFormat::Peft,
        None => return Err(invalid("holds no tensors".into())),
    };
    let mut layers: BTreeMap<String, Parts> = BTreeMap::new();
    for name in names {
        if let Some((_, kind)) = UNSUPPORTED.iter().find(|(s, _)| name.contains(s)) {
            return Err(invalid(format!(
                "key {name}: {kind} adapters are not supported (only LoRA and LoCon)"
            )));
        }
        let (prefix, role) = split_role(name, format).ok_or_else(|| {
            invalid(format!(
                "key {name} is not a {} LoRA key",
                match format {
                    LoraFormat::Kohya =>
                        "kohya (lora_unet_…/lora_te…_ with lora_down, lora_up, alpha)",
                    LoraFormat::Peft => "diffusers/PEFT (unet./text_encoder… with lora_A, lora_B)",
                }
            ))
        })?;
        let (component, module) = module_of(prefix, format)
            .ok_or_else(|| invalid(format!("key {name} names no UNet or text-encoder module")))?;
        let parts = layers.entry(prefix.to_string()).or_default();
        parts.component = Some(component);
        parts.module = Some(module);
        let slot = match role {
            Role::Down => &mut parts.down,
            Role::Up => &mut parts.up,
            Role::Alpha => &mut parts.alpha,
        };
        *slot = Some(name.to_string());
    }
    let alphas = PeftAlphas::from_metadata(reader.metadata());
    let device = Device::Cpu;
    let read =
        |name: &str| -> Result<Tensor> { Ok(reader.tensor(name, &device)?.to_dtype(DType::F32)?) };
    let mut out = Vec::with_capacity(layers.len());
    for (key, parts) in layers {
        let (Some(component), Some(module)) = (parts.component, parts.module) else {
            continue;
        };
        let (down, up) = match (&parts.down, &parts.up) {
            (Some(down), Some(up)) => (read(down)?, read(up)?),
            _ => {
                return Err(invalid(format!(
                    "layer {key} needs both its down (lora_down/lora_A) and up (lora_up/lora_B) weights"
                )))
            }
        };
        let rank = down.dim(0)?;
        let shapes_fit = matches!(down.rank(), 2 | 4)
            && up.rank() == down.rank()
            && up.dim(1)? == rank
            && up.dims()[2..].iter().all(|&d| d == 1)
            && rank > 0;
        if !shapes_fit {
            return Err(invalid(format!(
                "layer {key}: down {:?} and up {:?} are not a low-rank pair",
                down.dims(),
                up.dims()
            )));
        }
        let alpha = match &parts.alpha {
            Some(name) => Some(f64::from(
                read(name)?
                    .flatten_all()?
                    .to_vec1::<f32>()?
                    .first()
                    .copied()
                    .ok_or_else(|| invalid(format!("key {name} is empty")))?,
            )),
            None => match (&module, format) {
                (ModuleKey::Dotted(m), LoraFormat::Peft) => alphas.alpha(component, m),
                _ => None,
            },
        };
        let scale = alpha.map_or(1.0, |a| a / rank as f64);
        out.push(LoraLayer {
            key,
            component,
            module,
            down,
            up,
            scale,
        });
    }
    Ok((format, out))
}

/// The layer prefix of a key and what the key holds.
fn split_role(name: &str, format: LoraFormat) -> Option<(&str, Role)> {
    let suffixes: &[(&str, Role)] = match format {
        LoraFormat::Kohya => &[
            (".lora_down.weight", Role::Down),
            (".lora_up.weight", Role::Up),
            (".alpha", Role::Alpha),
        ],
        LoraFormat::Peft => &[
            (".lora_A.weight", Role::Down),
            (".lora_B.weight", Role::Up),
            (".lora_A", Role::Down),
            (".lora_B", Role::Up),
            (".alpha", Role::Alpha),
        ],
    };
    suffixes
        .iter()
        .find_map(|(suffix, role)| name.strip_suffix(suffix).map(|prefix| (prefix, *role)))
}

/// The component and module a layer prefix names.
fn module_of(prefix: &str, format: LoraFormat) -> Option<(Component, ModuleKey)> {
    match format {
        LoraFormat::Kohya => KOHYA_PREFIXES.iter().find_map(|(p, component)| {
            let module = prefix.strip_prefix(p).filter(|m| !m.is_empty())?;
            Some((*component, ModuleKey::Underscored(module.to_string())))
        }),
        LoraFormat::Peft => PEFT_PREFIXES.iter().find_map(|(p, component)| {
            let module = prefix.strip_prefix(p).filter(|m| !m.is_empty())?;
            Some((*component, ModuleKey::Dotted(module.to_string())))
        }),
    }
}

/// The alphas diffusers' adapter metadata gives per component: `lora_alpha`
/// and the `alpha_pattern` overrides (a pattern matches a module path that
/// is it or ends in `.` and it).
#[derive(Default)]
struct PeftAlphas {
    by_component: HashMap<&'static str, ComponentAlphas>,
}

/// One component's `lora_alpha` and its `alpha_pattern` overrides.
#[derive(Default)]
struct ComponentAlphas {
    alpha: Option<f64>,
    patterns: Vec<(String, f64)>,
}

impl PeftAlphas {
    fn from_metadata(metadata: &HashMap<String, String>) -> Self {
        let mut alphas = Self::default();
        let Some(json) = metadata
            .get(ADAPTER_METADATA)
            .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
        else {
            return alphas;
        };
        for (prefix, _) in PEFT_PREFIXES {
            let field = |name: &str| json.get(format!("{prefix}{name}"));
            let alpha = field("lora_alpha").and_then(serde_json::Value::as_f64);
            let patterns = field("alpha_pattern")
                .and_then(serde_json::Value::as_object)
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                        .collect()
                })
                .unwrap_or_default();
            alphas
                .by_component
                .insert(prefix, ComponentAlphas { alpha, patterns });
        }
        alphas
    }

    fn alpha(&self, component: Component, module: &str) -> Option<f64> {
        let prefix = PEFT_PREFIXES
            .iter()
            .find(|(_, c)| *c == component)
            .map(|(p, _)| *p)?;
        let ComponentAlphas { alpha, patterns } = self.by_component.get(prefix)?;
        patterns
            .iter()
            .find(|(pattern, _)| module == pattern || module.ends_with(&format!(".{pattern}")))
            .map(|(_, a)| *a)
            .or(*alpha)
    }
}
