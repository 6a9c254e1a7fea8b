// Which MLA attention kernels of vLLM and SGLang a latent shape reaches (docs/stock-engines.md#fast-kernels).
import type { Finding, MlaDims } from './findings.js';

export interface KernelStatus {
  name: string;
  usable: boolean;
  /** Why not, or what else it needs (GPU generation). */
  note: string;
}

export interface KernelTables {
  vllm: KernelStatus[];
  sglang: KernelStatus[];
}

/** Which attention kernels the latent shape admits (hardware still decides among the usable ones). */
export function kernelTables(d: MlaDims): KernelTables {
  const r = d.kvLoraRank, dR = d.qkRopeHeadDim, head = r + dR;
  const is576 = r === 512 && dR === 64;
  const need576 = (what: string): KernelStatus['note'] => (is576 ? what : `needs 512 + 64, has ${r} + ${dR}`);
  const nopeOk = [64, 128, 192].includes(d.qkNopeHeadDim);
  const tritonVllm = head === 576 || head === 320;
  return {
    vllm: [
      { name: 'FLASHMLA', usable: is576, note: need576('Hopper/Blackwell (SM90/SM100), fp16/bf16, block size 64') },
      { name: 'FLASH_ATTN_MLA', usable: is576, note: need576('Hopper (SM90)') },
      {
        name: 'FLASHINFER_MLA', usable: is576 && nopeOk,
        note: !is576 ? need576('') : nopeOk ? 'Blackwell (SM100)' : `needs qk_nope_head_dim 64, 128 or 192, has ${d.qkNopeHeadDim}`,
      },
      { name: 'CUTLASS_MLA', usable: is576, note: need576('Blackwell (SM100)') },
      {
        name: 'TRITON_MLA', usable: tritonVllm,
        note: tritonVllm ? (head === 320 ? 'any GPU; head size 320 only in recent vLLM releases' : 'any GPU (portable fallback)') : `needs head size 576 (or 320), has ${head}`,
      },
    ],
    sglang: [
      { name: 'flashmla', usable: is576, note: need576('Hopper/Blackwell') },
      { name: 'fa3', usable: is576, note: need576('Hopper') },
      { name: 'flashinfer', usable: is576, note: need576('head_dim_ckv 512, head_dim_kpe 64') },
      { name: 'cutlass_mla / trtllm_mla', usable: is576, note: need576('Blackwell') },
      { name: 'triton', usable: true, note: 'any latent shape (portable fallback)' },
    ],
  };
}

/** Fast-path findings: vLLM's backend head-size gate, SGLang's backend choice, transformers' cache. */
export function checkKernels(d: MlaDims): Finding[] {
  const out: Finding[] = [];
  const r = d.kvLoraRank, dR = d.qkRopeHeadDim, head = r + dR;
  const shape = `kv_lora_rank ${r} + qk_rope_head_dim ${dR} = ${head}`;
  const fixShape = 'convert with kv_lora_rank 512 and qk_rope_head_dim 64 (a source with 2·KV heads·head_dim ≥ 576) to reach the fast kernels';
  out.push({
    rule: 'transformers-cache',
    impact: { transformers: 'not-fast' },
    message: 'transformers\' DeepseekV3 attention expands the latent and caches per-head keys and values: correct, but no latent cache and no MLA kernel',
  });
  if (head !== 576 && head !== 320) {
    out.push({
      rule: 'vllm-head-size',
      impact: { vllm: 'will-not-load' },
      message: `${shape}: every vLLM MLA backend accepts only head size 576 (512 + 64; recent releases also 320 = 256 + 64), so engine start fails with "No valid attention backend found" (VLLM_MLA_DISABLE=1 would run it as ordinary attention with an uncompressed cache)`,
      fix: fixShape,
    });
  } else if (head === 320) {
    out.push({
      rule: 'vllm-fast-kernels',
      impact: { vllm: 'not-fast' },
      message: `${shape}: only vLLM's TRITON_MLA backend (recent releases) takes head size 320; FlashMLA, FlashAttention MLA, FlashInfer MLA and CUTLASS MLA need 512 + 64`,
      fix: fixShape,
    });
  } else if (![64, 128, 192].includes(d.qkNopeHeadDim)) {
    out.push({
      rule: 'vllm-flashinfer-nope',
      impact: { vllm: 'note' },
      message: `qk_nope_head_dim ${d.qkNopeHeadDim}: vLLM's FlashInfer MLA backend (Blackwell) needs 64, 128 or 192; FlashMLA/CUTLASS MLA still apply`,
    });
  }
  if (head !== 576) {
    out.push({
      rule: 'sglang-backend',
      impact: { sglang: 'not-fast' },
      message: `${shape}: only SGLang's triton attention backend handles this latent shape (flashmla, fa3, flashinfer, cutlass_mla and trtllm_mla need 512 + 64); start it with --attention-backend triton`,
      fix: fixShape,
    });
  }
  return out;
}

