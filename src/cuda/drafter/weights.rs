//! The GPU drafter's device weights and working buffers: uploaded from a checkpoint or filled with
//! pseudo-random values on the device (benchmarks), all allocated at creation.

use std::vec::Vec;

use super::super::blas::Blas;
use super::super::{DeviceBuffer, DeviceCopy, Gpu, Module, Stream, arg};
use super::ops::{DrafterKernels, RANK_FEATURES};
use super::{GpuDrafter, GpuDrafterCapacity, GpuDrafterDims, PlanKind, RANK_HIDDEN};
use crate::drafter::DrafterConfig;
use crate::error::Error;
use crate::io::safetensors::SafeTensors;

pub(super) struct LayerWeights {
    pub(super) in_norm: DeviceBuffer<f32>,
    /// q, k, v stacked: `[(heads + 2 kv_heads) head_dim, H]`.
    pub(super) wqkv: DeviceBuffer<u16>,
    pub(super) wo: DeviceBuffer<u16>,
    pub(super) post_norm: DeviceBuffer<f32>,
    /// gate and up stacked: `[2 ffn, H]`.
    pub(super) w_gate_up: DeviceBuffer<u16>,
    pub(super) w_down: DeviceBuffer<u16>,
}

pub(super) struct Weights {
    pub(super) cond: DeviceBuffer<u16>,
    pub(super) cond_norm: DeviceBuffer<f32>,
    pub(super) tok_norm: DeviceBuffer<f32>,
    pub(super) query_norm: DeviceBuffer<f32>,
    pub(super) queries: DeviceBuffer<f32>,
    pub(super) fuse: DeviceBuffer<u16>,
    pub(super) layers: Vec<LayerWeights>,
    pub(super) shift: Vec<DeviceBuffer<u16>>,
    pub(super) norm: DeviceBuffer<f32>,
    pub(super) lm: DeviceBuffer<u16>,
    pub(super) rank1: DeviceBuffer<u16>,
    pub(super) rank2: DeviceBuffer<u16>,
    pub(super) d2t: DeviceBuffer<i32>,
    pub(super) inv_freq: DeviceBuffer<f32>,
    /// bf16 `[vocab, H]` token embedding (the target's, copied).
    pub(super) embed: DeviceBuffer<u16>,
}

/// Working buffers, sized for `max_rows = max_groups * K` rows.
pub(super) struct Scratch {
    pub(super) feat: DeviceBuffer<u16>,
    pub(super) cond: DeviceBuffer<f32>,
    pub(super) status: DeviceBuffer<i32>,
    pub(super) fused: DeviceBuffer<u16>,
    pub(super) x: DeviceBuffer<f32>,
    pub(super) xn: DeviceBuffer<u16>,
    pub(super) shift_in: DeviceBuffer<u16>,
    pub(super) qkv: DeviceBuffer<f32>,
    pub(super) attn: DeviceBuffer<u16>,
    /// f32 partial results of the split-key attention (`attention_workspace_len` for the rows).
    pub(super) attn_ws: DeviceBuffer<f32>,
    pub(super) tmp: DeviceBuffer<f32>,
    pub(super) gu: DeviceBuffer<f32>,
    pub(super) act: DeviceBuffer<u16>,
    pub(super) normed: DeviceBuffer<f32>,
    pub(super) logits: DeviceBuffer<f32>,
    pub(super) rank_in: DeviceBuffer<u16>,
    pub(super) rank_h: DeviceBuffer<f32>,
    pub(super) rank_hb: DeviceBuffer<u16>,
    pub(super) rank_logits: DeviceBuffer<f32>,
    pub(super) cand_ids: DeviceBuffer<i32>,
    pub(super) cand_logprobs: DeviceBuffer<f32>,
    /// i32 `[3, max_rows]`: positions, visible cache prefix, own-slot count.
    pub(super) meta: DeviceBuffer<i32>,
}

fn bf16_from_f32(x: f32) -> u16 {
    crate::cpu::kernels::f32_to_bf16(x)
}

fn upload_bf16(gpu: &Gpu, data: &[f32]) -> Result<DeviceBuffer<u16>, Error> {
    let v: Vec<u16> = data.iter().map(|&x| bf16_from_f32(x)).collect();
    DeviceBuffer::from_slice(gpu, &v)
}

/// Fills `buf` (bf16 as `u16`, or f32) on `stream` with deterministic pseudo-random values
/// `offset + scale * u`, u uniform in [-1, 1) (`kernels/bench_fill.cu`; for benchmarks and tests).
pub fn fill_random<T: DeviceCopy>(
    gpu: &Gpu,
    stream: &Stream,
    buf: &mut DeviceBuffer<T>,
    seed: u64,
    offset: f32,
    scale: f32,
) -> Result<(), Error> {
    let name = match size_of::<T>() {
        2 => c"sb_fill_random_bf16",
        4 => c"sb_fill_random_f32",
        _ => {
            return Err(Error::InvalidArgument(
                "fill_random: bf16 or f32 buffers only",
            ));
        }
    };
    let f = gpu.function(Module::BenchFill, name)?;
    let (ptr, n) = (buf.ptr(), buf.len() as u64);
    if n == 0 {
        return Ok(());
    }
    let blocks = n.div_ceil(256).clamp(1, 65_535) as u32;
    // SAFETY: the kernel writes n elements of this allocation; argument types match its signature.
    unsafe {
        super::ops::launch(
            gpu,
            stream,
            f,
            (blocks, 1, 1),
            256,
            &mut [arg(&ptr), arg(&n), arg(&seed), arg(&offset), arg(&scale)],
        )
    }
}

fn take(st: &SafeTensors, name: &str, shape: &[usize]) -> Result<Vec<f32>, Error> {
    let (got, data) = st.f32(name).map_err(|_| {
        Error::InvalidArgument("drafter checkpoint: a tensor is missing or not a float tensor")
    })?;
    if got != shape {
        return Err(Error::InvalidArgument(
            "drafter checkpoint: a tensor has the wrong shape (load it with Drafter for details)",
        ));
    }
    Ok(data)
}

impl<'g> GpuDrafter<'g> {
    /// Uploads a drafter checkpoint (the authors' tensor names, as [`crate::drafter::SpecBlockDrafter`] loads
    /// it) and the target's token embedding (`vocab x hidden` f32, rounded to bf16 on upload), and
    /// allocates every buffer. The weights are rounded to bf16.
    pub fn from_checkpoint(
        gpu: &'g Gpu,
        stream: &Stream,
        cfg: &DrafterConfig,
        st: &SafeTensors,
        embed: &[f32],
        cap: GpuDrafterCapacity,
    ) -> Result<Self, Error> {
        let d = GpuDrafterDims::from_config(cfg);
        d.check()?;
        let (h, hd) = (d.hidden, d.head_dim);
        let (qd, kvd) = (d.heads * hd, d.kv_heads * hd);
        if embed.len() != d.vocab * h {
            return Err(Error::ShapeMismatch {
                what: "token embedding (vocab x hidden)",
                expected: d.vocab * h,
                got: embed.len(),
            });
        }
        let f32b = |v: Vec<f32>| DeviceBuffer::from_slice(gpu, &v);
        let mut layers = Vec::with_capacity(d.layers);
        for l in 0..d.layers {
            let p = |s: &str| std::format!("layers.{l}.{s}.weight");
            let mut wqkv = take(st, &p("self_attn.q_proj"), &[qd, h])?;
            wqkv.extend(take(st, &p("self_attn.k_proj"), &[kvd, h])?);
            wqkv.extend(take(st, &p("self_attn.v_proj"), &[kvd, h])?);
            let mut gate_up = take(st, &p("mlp.gate_proj"), &[d.ffn, h])?;
            gate_up.extend(take(st, &p("mlp.up_proj"), &[d.ffn, h])?);
            layers.push(LayerWeights {
                in_norm: f32b(take(st, &p("input_layernorm"), &[h])?)?,
                wqkv: upload_bf16(gpu, &wqkv)?,
                wo: upload_bf16(gpu, &take(st, &p("self_attn.o_proj"), &[h, qd])?)?,
                post_norm: f32b(take(st, &p("post_attention_layernorm"), &[h])?)?,
                w_gate_up: upload_bf16(gpu, &gate_up)?,
                w_down: upload_bf16(gpu, &take(st, &p("mlp.down_proj"), &[h, d.ffn])?)?,
            });
        }
        let shift = (0..d.layers - 1)
            .map(|l| {
                upload_bf16(
                    gpu,
                    &take(st, &std::format!("shift_proj.{l}.weight"), &[h, 2 * h])?,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (d2t_shape, d2t) = st
            .i64("d2t")
            .map_err(|_| Error::InvalidArgument("drafter checkpoint: d2t missing"))?;
        if d2t_shape != [d.draft_vocab] {
            return Err(Error::InvalidArgument("drafter checkpoint: d2t shape"));
        }
        let mut d2t32 = Vec::with_capacity(d2t.len());
        for (i, &off) in d2t.iter().enumerate() {
            let t = i as i64 + off;
            if !(0..d.vocab as i64).contains(&t) {
                return Err(Error::InvalidArgument(
                    "drafter checkpoint: d2t maps outside the vocabulary",
                ));
            }
            d2t32.push(off as i32);
        }
        let w = Weights {
            cond: upload_bf16(
                gpu,
                &take(
                    st,
                    "input_layer.condition_proj.weight",
                    &[h, 3 * d.target_hidden],
                )?,
            )?,
            cond_norm: f32b(take(st, "input_layer.condition_norm.weight", &[h])?)?,
            tok_norm: f32b(take(st, "input_layer.token_norm.weight", &[h])?)?,
            query_norm: f32b(take(st, "input_layer.query_norm.weight", &[h])?)?,
            queries: f32b(take(
                st,
                "input_layer.position_queries.weight",
                &[d.slots, h],
            )?)?,
            fuse: upload_bf16(gpu, &take(st, "input_layer.fuse.weight", &[h, 3 * h])?)?,
            layers,
            shift,
            norm: f32b(take(st, "norm.weight", &[h])?)?,
            lm: upload_bf16(gpu, &take(st, "lm_head.weight", &[d.draft_vocab, h])?)?,
            rank1: upload_bf16(
                gpu,
                &take(st, "rank_head.0.weight", &[RANK_HIDDEN, h + RANK_FEATURES])?,
            )?,
            rank2: upload_bf16(
                gpu,
                &take(st, "rank_head.2.weight", &[d.rank_classes, RANK_HIDDEN])?,
            )?,
            d2t: DeviceBuffer::from_slice(gpu, &d2t32)?,
            inv_freq: f32b(crate::drafter::ops::rope_inv_freq(hd, d.rope_theta))?,
            embed: upload_bf16(gpu, embed)?,
        };
        Self::with_weights(gpu, stream, d, w, cap)
    }

    /// A drafter of shape `dims` with pseudo-random weights filled on the device (benchmarks): matrices
    /// uniform in ±1/sqrt(inner) (activations stay O(1)), norm weights in 1 ± 0.1, the embedding in
    /// ±0.02, draft id i mapped to target id i. Deterministic for a seed.
    pub fn random(
        gpu: &'g Gpu,
        stream: &Stream,
        dims: &GpuDrafterDims,
        cap: GpuDrafterCapacity,
        seed: u64,
    ) -> Result<Self, Error> {
        let d = dims.clone();
        d.check()?;
        let (h, hd) = (d.hidden, d.head_dim);
        let mut next_seed = seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let mut mat = |out: usize, inner: usize| -> Result<DeviceBuffer<u16>, Error> {
            let mut b = DeviceBuffer::<u16>::new(gpu, out * inner)?;
            next_seed = next_seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            fill_random(
                gpu,
                stream,
                &mut b,
                next_seed,
                0.0,
                1.0 / (inner as f32).sqrt(),
            )?;
            Ok(b)
        };
        let cond = mat(h, 3 * d.target_hidden)?;
        let fuse = mat(h, 3 * h)?;
        let mut layer_mats = Vec::with_capacity(d.layers);
        for _ in 0..d.layers {
            layer_mats.push((
                mat(d.qkv(), h)?,
                mat(h, d.heads * hd)?,
                mat(2 * d.ffn, h)?,
                mat(h, d.ffn)?,
            ));
        }
        let shift = (0..d.layers - 1)
            .map(|_| mat(h, 2 * h))
            .collect::<Result<Vec<_>, _>>()?;
        let lm = mat(d.draft_vocab, h)?;
        let rank1 = mat(RANK_HIDDEN, h + RANK_FEATURES)?;
        let rank2 = mat(d.rank_classes, RANK_HIDDEN)?;
        let mut embed = DeviceBuffer::<u16>::new(gpu, d.vocab * h)?;
        fill_random(gpu, stream, &mut embed, seed ^ 0xE, 0.0, 0.02)?;
        let mut vec_seed = seed ^ 0x5eed;
        let mut vector = |n: usize, offset: f32, scale: f32| -> Result<DeviceBuffer<f32>, Error> {
            let mut b = DeviceBuffer::<f32>::new(gpu, n)?;
            vec_seed = vec_seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            fill_random(gpu, stream, &mut b, vec_seed, offset, scale)?;
            Ok(b)
        };
        let mut layers = Vec::with_capacity(d.layers);
        for (wqkv, wo, w_gate_up, w_down) in layer_mats {
            layers.push(LayerWeights {
                in_norm: vector(h, 1.0, 0.1)?,
                wqkv,
                wo,
                post_norm: vector(h, 1.0, 0.1)?,
                w_gate_up,
                w_down,
            });
        }
        let w = Weights {
            cond,
            cond_norm: vector(h, 1.0, 0.1)?,
            tok_norm: vector(h, 1.0, 0.1)?,
            query_norm: vector(h, 1.0, 0.1)?,
            queries: vector(d.slots * h, 0.0, 1.0)?,
            fuse,
            layers,
            shift,
            norm: vector(h, 1.0, 0.1)?,
            lm,
            rank1,
            rank2,
            d2t: DeviceBuffer::from_slice(gpu, &std::vec![0i32; d.draft_vocab])?,
            inv_freq: DeviceBuffer::from_slice(
                gpu,
                &crate::drafter::ops::rope_inv_freq(hd, d.rope_theta),
            )?,
            embed,
        };
        stream.synchronize()?;
        Self::with_weights(gpu, stream, d, w, cap)
    }

    fn with_weights(
        gpu: &'g Gpu,
        stream: &Stream,
        d: GpuDrafterDims,
        w: Weights,
        cap: GpuDrafterCapacity,
    ) -> Result<Self, Error> {
        if cap.sequences == 0 || cap.max_groups == 0 || cap.context_entries == 0 {
            return Err(Error::InvalidArgument(
                "GPU drafter capacities must be non-zero",
            ));
        }
        if cap.candidates > super::ops::MAX_SELECT || cap.candidates > d.draft_vocab {
            return Err(Error::InvalidArgument(
                "GPU drafter candidates must be <= 64 and <= the draft vocabulary",
            ));
        }
        let rows = cap
            .max_groups
            .checked_mul(d.slots)
            .filter(|&r| r <= 65_535)
            .ok_or(Error::InvalidArgument(
                "GPU drafter: max_groups x slots must be <= 65535 rows",
            ))?;
        let (h, qd) = (d.hidden, d.heads * d.head_dim);
        let rank_stride = (h + RANK_FEATURES).div_ceil(8) * 8;
        let kc = cap.candidates.max(1);
        let s = Scratch {
            feat: DeviceBuffer::new(gpu, cap.max_groups * 3 * d.target_hidden)?,
            cond: DeviceBuffer::new(gpu, cap.max_groups * h)?,
            status: DeviceBuffer::new(gpu, 1)?,
            fused: DeviceBuffer::new(gpu, rows * 3 * h)?,
            x: DeviceBuffer::new(gpu, rows * h)?,
            xn: DeviceBuffer::new(gpu, rows * h)?,
            shift_in: DeviceBuffer::new(gpu, rows * 2 * h)?,
            qkv: DeviceBuffer::new(gpu, rows * d.qkv())?,
            attn: DeviceBuffer::new(gpu, rows * qd)?,
            attn_ws: DeviceBuffer::new(
                gpu,
                super::ops::attention_workspace_len(rows, d.heads, d.head_dim),
            )?,
            tmp: DeviceBuffer::new(gpu, rows * h)?,
            gu: DeviceBuffer::new(gpu, rows * 2 * d.ffn)?,
            act: DeviceBuffer::new(gpu, rows * d.ffn)?,
            normed: DeviceBuffer::new(gpu, rows * h)?,
            logits: DeviceBuffer::new(gpu, rows * d.draft_vocab)?,
            rank_in: DeviceBuffer::new(gpu, rows * rank_stride)?,
            rank_h: DeviceBuffer::new(gpu, rows * RANK_HIDDEN)?,
            rank_hb: DeviceBuffer::new(gpu, rows * RANK_HIDDEN)?,
            rank_logits: DeviceBuffer::new(gpu, rows * d.rank_classes)?,
            cand_ids: DeviceBuffer::new(gpu, rows * kc)?,
            cand_logprobs: DeviceBuffer::new(gpu, rows * kc)?,
            meta: DeviceBuffer::new(gpu, 3 * rows)?,
        };
        let cache_len = cap.sequences * d.kv_heads * cap.context_entries * d.slots * d.head_dim;
        let mut cache_k = Vec::with_capacity(d.layers);
        let mut cache_v = Vec::with_capacity(d.layers);
        for _ in 0..d.layers {
            cache_k.push(DeviceBuffer::new(gpu, cache_len)?);
            cache_v.push(DeviceBuffer::new(gpu, cache_len)?);
        }
        Ok(GpuDrafter {
            gpu,
            k: DrafterKernels::new(gpu)?,
            blas: Blas::new(gpu, stream)?,
            dims: d,
            cap,
            w,
            s,
            cache_k,
            cache_v,
            entries: std::vec![0; cap.sequences],
            last_base: std::vec![0; cap.sequences],
            staging: std::vec![0; 3 * rows],
            plan: Vec::with_capacity(cap.sequences),
            plan_kind: PlanKind::None,
            plan_groups: 0,
            plan_append: std::vec![(0, 0); cap.sequences],
            rank_stride,
        })
    }

    /// Benchmarks: fills every sequence's cache with pseudo-random keys and values (unit scale) and
    /// marks `entries` entries committed, the last at base position `entries`.
    pub fn fill_random_context(
        &mut self,
        stream: &Stream,
        entries: usize,
        seed: u64,
    ) -> Result<(), Error> {
        if entries > self.cap.context_entries {
            return Err(Error::Capacity {
                what: "GPU drafter context entries",
                capacity: self.cap.context_entries,
            });
        }
        for l in 0..self.dims.layers {
            let s = seed.wrapping_add(2 * l as u64);
            fill_random(self.gpu, stream, &mut self.cache_k[l], s, 0.0, 1.0)?;
            fill_random(self.gpu, stream, &mut self.cache_v[l], s + 1, 0.0, 1.0)?;
        }
        self.entries.fill(entries);
        self.last_base.fill(entries as u32);
        Ok(())
    }

    /// Benchmarks and tests: fills an f32 or bf16 device buffer with pseudo-random values
    /// `offset + scale * u`, u uniform in [-1, 1) (deterministic for a seed).
    pub fn fill_random<T: DeviceCopy>(
        &self,
        stream: &Stream,
        buf: &mut DeviceBuffer<T>,
        seed: u64,
        offset: f32,
        scale: f32,
    ) -> Result<(), Error> {
        fill_random(self.gpu, stream, buf, seed, offset, scale)
    }
}
