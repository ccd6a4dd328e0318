//! `POST /sdapi/v1/txt2img` and `POST /sdapi/v1/img2img`: A1111's fields
//! mapped onto a job request, `batch_size × n_iter` jobs submitted with
//! consecutive seeds, and their images answered once they are made.

use axum::extract::State;
use axum::{Extension, Json};
use sd_contract::a1111::{
    A1111Error, A1111Generation, A1111Images, A1111Info, Img2ImgRequest, Txt2ImgRequest,
};
#[cfg(doc)]
use sd_contract::a1111::{SAMPLER_NAMES, SCHEDULE_NAMES};
use sd_contract::limits::MAX_CLIP_SKIP;
use sd_contract::{
    GenerationFields, ImageGenerationRequest, ImageInpaintRequest, ImageTransformRequest, JobEvent,
    JobRequest, SchedulerKind,
};

use super::{A1111ApiError, A1111Json, Interrupts};
use crate::convert::scheduler_from_wire;
use crate::error::ApiError;
use crate::routes::blocking::{submit, Finished};
use crate::state::AppState;

/// The strength of an `img2img` call that gives none (A1111's default).
const DEFAULT_DENOISING_STRENGTH: f64 = 0.75;

/// The samplers, by A1111 name (in [`SAMPLER_NAMES`]' order), with the
/// other names taken for them.
pub(super) const SAMPLERS: [(&str, SchedulerKind, &[&str]); 8] = [
    (
        "Euler a",
        SchedulerKind::EulerA,
        &["k_euler_a", "k_euler_ancestral", "euler_a"],
    ),
    ("Euler", SchedulerKind::Euler, &["k_euler", "euler"]),
    (
        "DPM++ 2M",
        SchedulerKind::Dpmpp2m,
        &["k_dpmpp_2m", "dpmpp_2m"],
    ),
    (
        "DPM++ 2M Karras",
        SchedulerKind::Dpmpp2mKarras,
        &["k_dpmpp_2m_ka", "dpmpp_2m_karras"],
    ),
    ("DDIM", SchedulerKind::Ddim, &["ddim"]),
    ("PLMS", SchedulerKind::Pndm, &["pndm", "plms"]),
    ("UniPC", SchedulerKind::Unipc, &["unipc"]),
    ("LCM", SchedulerKind::Lcm, &["k_lcm", "lcm"]),
];

/// The schedules, by name (in [`SCHEDULE_NAMES`]' order), with their label.
pub(super) const SCHEDULES: [(&str, &str); 2] = [("automatic", "Automatic"), ("karras", "Karras")];

/// Text to image.
#[utoipa::path(
    post,
    path = "/sdapi/v1/txt2img",
    tag = "a1111",
    request_body = Txt2ImgRequest,
    responses(
        (status = 200, description = "The images (none if interrupted)", body = A1111Images),
        (status = 401, description = "Missing or wrong API key", body = sd_contract::ErrorBody),
        (status = 403, description = "Host or Origin not served", body = sd_contract::ErrorBody),
        (status = 408, description = "Body not received within the body timeout", body = A1111Error),
        (status = 413, description = "Body over the size limit", body = sd_contract::ErrorBody),
        (status = 415, description = "Body not sent as JSON", body = A1111Error),
        (status = 422, description = "Not JSON, or a field with a bad value", body = A1111Error),
        (status = 500, description = "A job failed", body = A1111Error),
        (status = 503, description = "Queue full, model not ready, or shutting down",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying")),
            body = A1111Error),
    ),
    security((), ("api_key" = []))
)]
pub async fn txt2img(
    State(state): State<AppState>,
    Extension(interrupts): Extension<Interrupts>,
    A1111Json { value, raw }: A1111Json<Txt2ImgRequest>,
) -> Result<Json<A1111Images>, A1111ApiError> {
    let generation = generation_fields(&value.generation)?;
    let request = JobRequest::ImageGeneration(ImageGenerationRequest { generation });
    generate(&state, &interrupts, request, &value.generation, raw).await
}

/// Image to image, or inpainting when a `mask` is given.
#[utoipa::path(
    post,
    path = "/sdapi/v1/img2img",
    tag = "a1111",
    request_body = Img2ImgRequest,
    responses(
        (status = 200, description = "The images (none if interrupted)", body = A1111Images),
        (status = 401, description = "Missing or wrong API key", body = sd_contract::ErrorBody),
        (status = 403, description = "Host or Origin not served", body = sd_contract::ErrorBody),
        (status = 408, description = "Body not received within the body timeout", body = A1111Error),
        (status = 413, description = "Body over the size limit", body = sd_contract::ErrorBody),
        (status = 415, description = "Body not sent as JSON", body = A1111Error),
        (status = 422, description = "Not JSON, or a field with a bad value (a picture that \
            does not decode included)", body = A1111Error),
        (status = 500, description = "A job failed", body = A1111Error),
        (status = 503, description = "Queue full, model not ready, or shutting down",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying")),
            body = A1111Error),
    ),
    security((), ("api_key" = []))
)]
pub async fn img2img(
    State(state): State<AppState>,
    Extension(interrupts): Extension<Interrupts>,
    A1111Json { value, mut raw }: A1111Json<Img2ImgRequest>,
) -> Result<Json<A1111Images>, A1111ApiError> {
    let generation = generation_fields(&value.generation)?;
    let [image] = <[String; 1]>::try_from(value.init_images).map_err(|images| {
        ApiError::invalid(
            "init_images",
            format!("must hold exactly one picture, got {}", images.len()),
        )
    })?;
    if value
        .inpainting_mask_invert
        .is_some_and(|invert| invert != 0)
    {
        return Err(ApiError::invalid(
            "inpainting_mask_invert",
            "only 0 is supported: paint the part to repaint white",
        )
        .into());
    }
    if value.inpainting_fill.is_some_and(|fill| fill > 3) {
        return Err(ApiError::invalid("inpainting_fill", "must be 0, 1, 2 or 3").into());
    }
    let strength = Some(
        value
            .denoising_strength
            .unwrap_or(DEFAULT_DENOISING_STRENGTH),
    );
    let request = match value.mask {
        Some(mask_image) => JobRequest::ImageInpaint(ImageInpaintRequest {
            generation,
            init_image: image,
            mask_image,
            strength,
        }),
        None => JobRequest::ImageTransform(ImageTransformRequest {
            generation,
            strength,
            input_image: image,
        }),
    };
    // A1111 leaves the pictures out of the echo of the request.
    for field in ["init_images", "mask"] {
        if let Some(value) = raw.get_mut(field) {
            *value = serde_json::Value::Null;
        }
    }
    generate(&state, &interrupts, request, &value.generation, raw).await
}

/// Submits the images' jobs and waits for them, or for an interrupt (which
/// cancels those that have not ended and answers no images). A skip cancels
/// the call's running job (a batch of up to eight images) and the call goes
/// on with its other jobs, answering without the skipped job's images.
async fn generate(
    state: &AppState,
    interrupts: &Interrupts,
    request: JobRequest,
    asked: &A1111Generation,
    parameters: serde_json::Value,
) -> Result<Json<A1111Images>, A1111ApiError> {
    let interrupted = interrupts.next();
    let call = async {
        let submitted = submit(state, request, asked.image_count()).await?;
        loop {
            let skipped = interrupts.next_skip();
            tokio::select! {
                finished = submitted.ended() => break Ok::<_, ApiError>(finished),
                () = skipped => submitted.cancel_running(),
            }
        }
    };
    let finished = tokio::select! {
        finished = call => finished.map_err(in_a1111_terms)?,
        () = interrupted => {
            tracing::info!("A1111 call interrupted: its unfinished jobs are cancelled");
            Vec::new()
        }
    };
    let model = sd_core::model::model_name(&state.config().model);
    answer(&finished, asked, parameters, model)
}

/// The answer for the jobs that ended: the images of those that completed.
fn answer(
    finished: &[Finished],
    asked: &A1111Generation,
    parameters: serde_json::Value,
    model: String,
) -> Result<Json<A1111Images>, A1111ApiError> {
    let mut images = Vec::with_capacity(finished.len());
    let mut seeds = Vec::with_capacity(finished.len());
    let mut infotexts = Vec::with_capacity(finished.len());
    for done in finished {
        match done.end.as_ref() {
            JobEvent::Complete(_) => {
                for (image, seed) in done.images() {
                    infotexts.push(parameters_text(image).unwrap_or_default());
                    images.push(image.to_string());
                    seeds.push(seed);
                }
            }
            JobEvent::Error(error) => {
                return Err(ApiError::Internal(format!(
                    "job {} failed: {}",
                    done.job.id(),
                    error.message
                ))
                .into())
            }
            // Cancelled through the job API or by a shutdown: the others are answered.
            _ => {}
        }
    }
    let params = finished.first().map(|f| f.job.params());
    let prompt = params.map_or_else(|| asked.prompt.clone(), |p| p.prompt.clone());
    let negative_prompt = params
        .and_then(|p| p.negative_prompt.clone())
        .or_else(|| asked.negative_prompt.clone())
        .unwrap_or_default();
    let count = images.len();
    let first_seed = seeds
        .first()
        .copied()
        .or_else(|| asked.seed.and_then(|s| u64::try_from(s).ok()))
        .unwrap_or(0);
    let info = A1111Info {
        all_prompts: vec![prompt.clone(); count],
        prompt,
        all_negative_prompts: vec![negative_prompt.clone(); count],
        negative_prompt,
        seed: first_seed,
        subseed: first_seed,
        all_subseeds: seeds.clone(),
        all_seeds: seeds,
        subseed_strength: 0.0,
        width: params.map_or(asked.width.unwrap_or(0), |p| p.width),
        height: params.map_or(asked.height.unwrap_or(0), |p| p.height),
        sampler_name: params.map_or_else(
            || asked.sampler_name.clone().unwrap_or_default(),
            |p| scheduler_from_wire(p.scheduler).a1111_name().to_string(),
        ),
        cfg_scale: params.map_or(asked.cfg_scale.unwrap_or(0.0), |p| p.guidance_scale),
        steps: params.map_or(asked.steps.unwrap_or(0), |p| p.steps),
        batch_size: asked.batch_size.unwrap_or(1).max(1),
        n_iter: asked.n_iter.unwrap_or(1).max(1),
        denoising_strength: params.and_then(|p| p.strength),
        clip_skip: params.map_or_else(
            || {
                asked
                    .override_settings
                    .as_ref()
                    .and_then(|s| s.clip_stop_at_last_layers)
                    .unwrap_or(1)
            },
            |p| p.clip_skip + 1,
        ),
        sd_model_name: model,
        infotexts,
        index_of_first_image: 0,
        styles: Vec::new(),
    };
    let info = serde_json::to_string(&info)
        .map_err(|e| ApiError::Internal(format!("encoding the info: {e}")))?;
    Ok(Json(A1111Images {
        images,
        parameters,
        info,
    }))
}

/// The job fields an A1111 request stands for; live previews are on, for
/// `GET /sdapi/v1/progress`'s `current_image`.
fn generation_fields(asked: &A1111Generation) -> Result<GenerationFields, ApiError> {
    let clip_stop = asked
        .override_settings
        .as_ref()
        .and_then(|settings| settings.clip_stop_at_last_layers);
    let max_stop = MAX_CLIP_SKIP + 1;
    if let Some(n) = clip_stop.filter(|n| !(1..=max_stop).contains(n)) {
        return Err(ApiError::invalid(
            "override_settings.CLIP_stop_at_last_layers",
            format!("must be between 1 and {max_stop}, got {n}"),
        ));
    }
    for (field, value, max) in [
        (
            "batch_size",
            asked.batch_size,
            A1111Generation::MAX_BATCH_SIZE,
        ),
        ("n_iter", asked.n_iter, A1111Generation::MAX_N_ITER),
    ] {
        if let Some(n) = value.filter(|n| !(1..=max).contains(n)) {
            return Err(ApiError::invalid(
                field,
                format!("must be between 1 and {max}, got {n}"),
            ));
        }
    }
    let seed = match asked.seed {
        None | Some(-1) => None,
        Some(seed) => Some(u64::try_from(seed).map_err(|_| {
            ApiError::invalid("seed", format!("must be -1 (random) or from 0, got {seed}"))
        })?),
    };
    Ok(GenerationFields {
        prompt: asked.prompt.clone(),
        negative_prompt: asked.negative_prompt.clone().filter(|n| !n.is_empty()),
        steps: asked.steps,
        guidance_scale: asked.cfg_scale,
        seed,
        width: asked.width,
        height: asked.height,
        scheduler: sampler(asked)?,
        clip_skip: clip_stop.map(|n| n - 1),
        preview: Some(true),
        ..Default::default()
    })
}

/// The scheduler an A1111 sampler and schedule name; `None` (the worker's
/// default) when neither names one (absent, `null` or `""`). Names match
/// without regard to case, but exactly otherwise.
fn sampler(asked: &A1111Generation) -> Result<Option<SchedulerKind>, ApiError> {
    let karras = match asked.scheduler.as_deref() {
        None | Some("") => false,
        Some(s) if s.eq_ignore_ascii_case("automatic") => false,
        Some(s) if s.eq_ignore_ascii_case("karras") => true,
        Some(other) => {
            let known: Vec<&str> = SCHEDULES.iter().map(|(name, _)| *name).collect();
            return Err(ApiError::invalid(
                "scheduler",
                format!("unknown scheduler `{other}`; known: {}", known.join(", ")),
            ));
        }
    };
    // Both names must be known; `sampler_name` wins (A1111 reads `sampler_index` only without it).
    let by_name = sampler_named("sampler_name", asked.sampler_name.as_deref())?;
    let by_index = sampler_named("sampler_index", asked.sampler_index.as_deref())?;
    let Some((name, kind)) = by_name.or(by_index) else {
        return if karras {
            Err(ApiError::invalid(
                "scheduler",
                "the karras schedule needs the sampler `DPM++ 2M`",
            ))
        } else {
            Ok(None)
        };
    };
    match (kind, karras) {
        (kind, false) => Ok(Some(kind)),
        (SchedulerKind::Dpmpp2m | SchedulerKind::Dpmpp2mKarras, true) => {
            Ok(Some(SchedulerKind::Dpmpp2mKarras))
        }
        (_, true) => Err(ApiError::invalid(
            "scheduler",
            format!("the karras schedule is supported with `DPM++ 2M` only, not `{name}`"),
        )),
    }
}

/// The sampler `field` names (`None` when absent or empty), with its name.
fn sampler_named<'a>(
    field: &str,
    name: Option<&'a str>,
) -> Result<Option<(&'a str, SchedulerKind)>, ApiError> {
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    SAMPLERS
        .iter()
        .find(|(a1111, _, aliases)| {
            a1111.eq_ignore_ascii_case(name) || aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
        })
        .map(|(_, kind, _)| Some((name, *kind)))
        .ok_or_else(|| {
            let known: Vec<&str> = SAMPLERS.iter().map(|(a1111, _, _)| *a1111).collect();
            ApiError::invalid(
                field,
                format!("unknown sampler `{name}`; known: {}", known.join(", ")),
            )
        })
}

/// A validation error with the job API's field names put in A1111's.
fn in_a1111_terms(err: ApiError) -> A1111ApiError {
    let ApiError::InvalidField { field, message } = err else {
        return A1111ApiError(err);
    };
    let field = match field.as_str() {
        "guidance_scale" => "cfg_scale",
        "input_image" | "init_image" => "init_images",
        "mask_image" => "mask",
        "strength" => "denoising_strength",
        "scheduler" => "sampler_name",
        other => other,
    };
    A1111ApiError(ApiError::invalid(field, message))
}

/// The `parameters` text of a base64 PNG.
fn parameters_text(image: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(image)
        .ok()?;
    let reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .ok()?;
    let info = reader.info();
    let latin1 = info
        .uncompressed_latin1_text
        .iter()
        .find(|chunk| chunk.keyword == "parameters")
        .map(|chunk| chunk.text.clone());
    latin1.or_else(|| {
        info.utf8_text
            .iter()
            .find(|chunk| chunk.keyword == "parameters")
            .and_then(|chunk| chunk.get_text().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(sampler: Option<&str>, scheduler: Option<&str>) -> A1111Generation {
        A1111Generation {
            prompt: "x".into(),
            sampler_name: sampler.map(str::to_string),
            scheduler: scheduler.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn samplers_map_by_name_alias_and_schedule() {
        let kind =
            |name: Option<&str>, schedule: Option<&str>| sampler(&asked(name, schedule)).unwrap();
        assert_eq!(kind(Some("Euler a"), None), Some(SchedulerKind::EulerA));
        assert_eq!(
            kind(Some("euler A"), Some("Automatic")),
            Some(SchedulerKind::EulerA)
        );
        assert_eq!(kind(Some("k_euler"), None), Some(SchedulerKind::Euler));
        assert_eq!(kind(Some("PLMS"), None), Some(SchedulerKind::Pndm));
        assert_eq!(
            kind(Some("DPM++ 2M"), Some("Karras")),
            Some(SchedulerKind::Dpmpp2mKarras)
        );
        assert_eq!(
            kind(Some("DPM++ 2M"), Some("automatic")),
            Some(SchedulerKind::Dpmpp2m)
        );
        assert_eq!(
            kind(Some("DPM++ 2M Karras"), None),
            Some(SchedulerKind::Dpmpp2mKarras)
        );
        assert_eq!(kind(None, None), None);
        for (name, kind_expected, _) in SAMPLERS {
            assert_eq!(kind(Some(name), None), Some(kind_expected));
        }
    }

    #[test]
    fn the_tables_list_the_contracts_names() {
        let samplers: Vec<&str> = SAMPLERS.iter().map(|(name, _, _)| *name).collect();
        assert_eq!(samplers, sd_contract::a1111::SAMPLER_NAMES);
        let schedules: Vec<&str> = SCHEDULES.iter().map(|(name, _)| *name).collect();
        assert_eq!(schedules, sd_contract::a1111::SCHEDULE_NAMES);
    }

    #[test]
    fn unknown_samplers_and_schedules_name_the_known_ones() {
        let err = sampler(&asked(Some("Heun"), None)).unwrap_err();
        assert!(
            matches!(&err, ApiError::InvalidField { field, message }
                if field == "sampler_name" && message.contains("Euler a, Euler, DPM++ 2M")),
            "{err:?}"
        );
        let err = sampler(&asked(Some("Euler"), Some("Karras"))).unwrap_err();
        assert!(matches!(&err, ApiError::InvalidField { field, .. } if field == "scheduler"));
        let err = sampler(&asked(None, Some("Exponential"))).unwrap_err();
        assert!(
            matches!(&err, ApiError::InvalidField { message, .. } if message.contains("automatic, karras"))
        );
    }
}
