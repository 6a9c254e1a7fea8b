// Random stock DeepSeek-V3 (MLA, dense MLP) checkpoints and an independent float64 reference
// forward pass written as the stock modelling code reads: q (or q_b(RMSNorm(q_a))), the latent
// c = RMSNorm(kv_a[:r]) (kv_a_layernorm), k_pe = kv_a[r:], RoPE applied the way
// apply_rotary_pos_emb_interleave does (de-interleave [x0,x1,x2,…] → [x0,x2,…,x1,x3,…], then
// rotate-half with cos/sin scaled by YaRN's attention factor), softmax scale
// qk_head_dim^−½·mscale², no cache.
import { MapSource, mulberry32 } from './random-llama.js';
import type { Tensor } from '../../src/tensor.js';

export interface DeepseekSpec {
  hidden: number;
  heads: number;
  nope: number;
  rope: number;
  v: number;
  kvLoraRank: number;
  qLoraRank: number | null;
  inter: number;
  vocab: number;
  layers: number;
  seed?: number;
  tied?: boolean;
  ropeTheta?: number;
  /** rope_scaling JSON (e.g. DeepSeek's yarn block). */
  ropeScaling?: Record<string, unknown> | null;
  maxPositionEmbeddings?: number;
  /** Write rope_interleave: false (rotate-half q_pe/k_pe). */
  ropeHalf?: boolean;
  /** Scale of the latent (kv_a rows): the norm must not be a no-op. */
  latentScale?: number;
}

export interface DeepseekModel {
  json: Record<string, unknown>;
  src: MapSource;
  f64: Map<string, Float64Array>;
}

export function randomDeepseek(s: DeepseekSpec): DeepseekModel {
  const D = s.hidden, H = s.heads, dn = s.nope, dR = s.rope, dv = s.v, r = s.kvLoraRank, I = s.inter, V = s.vocab;
  const json: Record<string, unknown> = {
    architectures: ['DeepseekV3ForCausalLM'], model_type: 'deepseek_v3',
    vocab_size: V, hidden_size: D, intermediate_size: I, moe_intermediate_size: I,
    num_hidden_layers: s.layers, num_attention_heads: H, num_key_value_heads: H,
    n_shared_experts: 1, n_routed_experts: 1, routed_scaling_factor: 1, n_group: 1, topk_group: 1, num_experts_per_tok: 1,
    first_k_dense_replace: s.layers, norm_topk_prob: true,
    kv_lora_rank: r, q_lora_rank: s.qLoraRank, qk_rope_head_dim: dR, v_head_dim: dv, qk_nope_head_dim: dn,
    hidden_act: 'silu', max_position_embeddings: s.maxPositionEmbeddings ?? 4096, rms_norm_eps: 1e-6,
    rope_theta: s.ropeTheta ?? 10000, rope_scaling: s.ropeScaling ?? null, rope_interleave: !s.ropeHalf,
    attention_bias: false, attention_dropout: 0, tie_word_embeddings: s.tied ?? false,
    bos_token_id: 1, eos_token_id: 2, torch_dtype: 'float32',
  };
  const rnd = mulberry32(s.seed ?? 1);
  const map = new Map<string, Tensor>();
  const f64 = new Map<string, Float64Array>();
  const add = (name: string, shape: number[], gen: () => number): void => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = gen();
    map.set(name, { dtype: 'f32', shape, data });
    f64.set(name, Float64Array.from(data));
  };
  const u = (a: number) => () => (2 * rnd() - 1) * a;
  const w = (fanIn: number) => u(Math.sqrt(3 / fanIn));
  const norm = () => 1 + (2 * rnd() - 1) * 0.3;
  const ls = s.latentScale ?? 3;
  add('model.embed_tokens.weight', [V, D], u(1));
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}`;
    add(`${p}.input_layernorm.weight`, [D], norm);
    if (s.qLoraRank === null) {
      add(`${p}.self_attn.q_proj.weight`, [H * (dn + dR), D], w(D));
    } else {
      add(`${p}.self_attn.q_a_proj.weight`, [s.qLoraRank, D], u(ls * Math.sqrt(3 / D)));
      add(`${p}.self_attn.q_a_layernorm.weight`, [s.qLoraRank], norm);
      add(`${p}.self_attn.q_b_proj.weight`, [H * (dn + dR), s.qLoraRank], w(s.qLoraRank));
    }
    // Latent rows scaled by `ls`, RoPE rows plain, so RMSNorm changes c substantially.
    const kvaScale = Math.sqrt(3 / D);
    let row = 0;
    add(`${p}.self_attn.kv_a_proj_with_mqa.weight`, [r + dR, D], () => {
      const i = Math.floor(row++ / D);
      return (2 * rnd() - 1) * kvaScale * (i < r ? ls : 1);
    });
    add(`${p}.self_attn.kv_a_layernorm.weight`, [r], norm);
    add(`${p}.self_attn.kv_b_proj.weight`, [H * (dn + dv), r], w(r));
    add(`${p}.self_attn.o_proj.weight`, [D, H * dv], w(H * dv));
    add(`${p}.post_attention_layernorm.weight`, [D], norm);
    add(`${p}.mlp.gate_proj.weight`, [I, D], w(D));
    add(`${p}.mlp.up_proj.weight`, [I, D], w(D));
    add(`${p}.mlp.down_proj.weight`, [D, I], w(I));
  }
  add('model.norm.weight', [D], norm);
  if (!s.tied) add('lm_head.weight', [V, D], w(D));
  return { json, src: new MapSource(map), f64 };
}

function mv(W: Float64Array, x: Float64Array, out: number): Float64Array {
  const n = x.length, y = new Float64Array(out);
  for (let o = 0; o < out; o++) { let s = 0; for (let i = 0; i < n; i++) s += W[o * n + i]! * x[i]!; y[o] = s; }
  return y;
}

function rms(x: Float64Array, w: Float64Array, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * inv * w[i]!);
}

/** HF's yarn frequencies and attention factor, step by step (rope_scaling dict as in config.json). */
function hfYarn(dim: number, base: number, rs: Record<string, number>, mpe: number): { inv: number[]; attn: number } {
  const factor = rs.factor ?? mpe / rs.original_max_position_embeddings!;
  const getM = (sc: number, m = 1) => (sc <= 1 ? 1 : 0.1 * m * Math.log(sc) + 1);
  const attn = rs.attention_factor ?? (rs.mscale && rs.mscale_all_dim ? getM(factor, rs.mscale) / getM(factor, rs.mscale_all_dim) : getM(factor));
  const bf = rs.beta_fast || 32, bs = rs.beta_slow || 1;
  const omp = rs.original_max_position_embeddings ?? mpe;
  const cd = (rot: number) => (dim * Math.log(omp / (rot * 2 * Math.PI))) / (2 * Math.log(base));
  const low = Math.max(Math.floor(cd(bf)), 0);
  let high = Math.min(Math.ceil(cd(bs)), dim - 1);
  if (low === high) high += 0.001;
  const inv: number[] = [];
  for (let i = 0; i < dim / 2; i++) {
    const pf = Math.pow(base, (2 * i) / dim);
    const ramp = Math.min(1, Math.max(0, (i - low) / (high - low)));
    const ef = 1 - ramp;
    inv.push((1 / (factor * pf)) * (1 - ef) + (1 / pf) * ef);
  }
  return { inv, attn };
}

/** In place on v[off..off+d): the stock RoPE (interleave → de-interleave + rotate-half, or plain rotate-half). */
function stockRope(v: Float64Array, off: number, d: number, p: number, inv: number[], attn: number, interleave: boolean): void {
  const x = Array.from(v.subarray(off, off + d));
  const y = interleave ? [...x.filter((_, i) => i % 2 === 0), ...x.filter((_, i) => i % 2 === 1)] : x;
  const h = d / 2;
  const out = new Array<number>(d);
  for (let i = 0; i < d; i++) {
    const f = inv[i % h]!;
    const c = Math.cos(p * f) * attn, s = Math.sin(p * f) * attn;
    const rot = i < h ? -y[i + h]! : y[i - h]!;
    out[i] = y[i]! * c + rot * s;
  }
  // The de-interleaved order is kept (q and k alike): dot products are unchanged by it.
  for (let i = 0; i < d; i++) v[off + i] = out[i]!;
}

export function referenceDeepseekLogits(m: DeepseekModel, tokens: readonly number[]): Float64Array[] {
  const j = m.json as Record<string, any>;
  const D = j.hidden_size, H = j.num_attention_heads, dn = j.qk_nope_head_dim, dR = j.qk_rope_head_dim, dv = j.v_head_dim;
  const r = j.kv_lora_rank, rq = j.q_lora_rank, V = j.vocab_size, I = j.intermediate_size, eps = j.rms_norm_eps;
  const W = m.f64;
  const get = (n: string) => { const t = W.get(n); if (!t) throw new Error(`ref: no ${n}`); return t; };
  const qh = dn + dR;
  let inv: number[] = [], attn = 1, scale = 1 / Math.sqrt(qh);
  const rs = j.rope_scaling as Record<string, any> | null;
  if (rs && (rs.rope_type ?? rs.type) === 'yarn') {
    ({ inv, attn } = hfYarn(dR, j.rope_theta, rs, j.max_position_embeddings));
    if (rs.mscale_all_dim) { const ms = 0.1 * rs.mscale_all_dim * Math.log(rs.factor) + 1; scale *= ms * ms; }
  } else {
    for (let i = 0; i < dR / 2; i++) inv.push(Math.pow(j.rope_theta, -(2 * i) / dR));
  }
  const interleave = j.rope_interleave !== false;
  const emb = get('model.embed_tokens.weight');
  let xs: Float64Array[] = tokens.map((t) => emb.slice(t * D, (t + 1) * D));
  for (let l = 0; l < j.num_hidden_layers; l++) {
    const p = `model.layers.${l}`, a = `${p}.self_attn`;
    const qs: Float64Array[] = [], ks: Float64Array[] = [], vs: Float64Array[] = [];
    for (let t = 0; t < xs.length; t++) {
      const xn = rms(xs[t]!, get(`${p}.input_layernorm.weight`), eps);
      const q = rq === null ? mv(get(`${a}.q_proj.weight`), xn, H * qh)
        : mv(get(`${a}.q_b_proj.weight`), rms(mv(get(`${a}.q_a_proj.weight`), xn, rq), get(`${a}.q_a_layernorm.weight`), eps), H * qh);
      const kva = mv(get(`${a}.kv_a_proj_with_mqa.weight`), xn, r + dR);
      const c = rms(kva.slice(0, r), get(`${a}.kv_a_layernorm.weight`), eps);
      const kpe = kva.slice(r);
      stockRope(kpe, 0, dR, t, inv, attn, interleave);
      const kv = mv(get(`${a}.kv_b_proj.weight`), c, H * (dn + dv));
      const k = new Float64Array(H * qh), v = new Float64Array(H * dv);
      for (let h = 0; h < H; h++) {
        stockRope(q, h * qh + dn, dR, t, inv, attn, interleave);
        k.set(kv.subarray(h * (dn + dv), h * (dn + dv) + dn), h * qh);
        k.set(kpe, h * qh + dn);
        v.set(kv.subarray(h * (dn + dv) + dn, (h + 1) * (dn + dv)), h * dv);
      }
      qs.push(q); ks.push(k); vs.push(v);
    }
    const next: Float64Array[] = [];
    for (let t = 0; t < xs.length; t++) {
      const o = new Float64Array(H * dv);
      for (let h = 0; h < H; h++) {
        const sc: number[] = [];
        for (let s = 0; s <= t; s++) {
          let z = 0;
          for (let i = 0; i < qh; i++) z += qs[t]![h * qh + i]! * ks[s]![h * qh + i]!;
          sc.push(z * scale);
        }
        const mx = Math.max(...sc);
        const e = sc.map((z) => Math.exp(z - mx));
        const zs = e.reduce((x, y) => x + y, 0);
        for (let s = 0; s <= t; s++) for (let i = 0; i < dv; i++) o[h * dv + i]! += (e[s]! / zs) * vs[s]![h * dv + i]!;
      }
      const ao = mv(get(`${a}.o_proj.weight`), o, D);
      const x1 = xs[t]!.map((v, i) => v + ao[i]!);
      const xn = rms(x1, get(`${p}.post_attention_layernorm.weight`), eps);
      const g1 = mv(get(`${p}.mlp.gate_proj.weight`), xn, I);
      const u1 = mv(get(`${p}.mlp.up_proj.weight`), xn, I);
      const hm = g1.map((g, i) => (g / (1 + Math.exp(-g))) * u1[i]!);
      const dd = mv(get(`${p}.mlp.down_proj.weight`), hm, D);
      next.push(x1.map((v, i) => v + dd[i]!));
    }
    xs = next;
  }
  const head = j.tie_word_embeddings ? emb : get('lm_head.weight');
  return xs.map((x) => mv(head, rms(x, get('model.norm.weight'), eps), V));
}
