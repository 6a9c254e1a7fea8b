// What a folder records about its own weights, against what config.json says. Stock engines read
// only config.json, so when an edited config contradicts the layout transmla.json records (the
// converter and the strict export write it beside the weights), an engine that honours the
// config computes something else, and an engine that ignores the key may still be right. These
// rules decide per engine from the recorded layout; a config rule whose premise ("the weights are
// laid out as config.json says") is contradicted is superseded (validate.ts drops it).
import { ALL, isObj, type Finding, type FolderFacts } from './findings.js';

export interface RecordedCheck {
  findings: Finding[];
  /** Rule ids of config-only findings this folder's records contradict. */
  supersedes: string[];
}

const STOCK_VARIANT = 'deepseek-v3';

/** The q_pe/k_pe row layout transmla.json records, when it records one. */
function recordedRopeRows(t: Record<string, unknown>): { rows: 'interleaved' | 'half'; where: string } | null {
  // The strict export always writes interleaved rows (permuting a rotate-half source).
  if (t.variant === STOCK_VARIANT) return { rows: 'interleaved', where: 'transmla.json (variant "deepseek-v3": the strict export writes q_pe/k_pe rows as interleaved pairs)' };
  const layout = isObj(t.parameters) ? t.parameters.ropeLayout : undefined;
  if (typeof layout !== 'string') return null;
  if (/interleaved/.test(layout)) return { rows: 'interleaved', where: `transmla.json parameters.ropeLayout ("${layout}")` };
  if (/rotate-half/.test(layout)) return { rows: 'half', where: `transmla.json parameters.ropeLayout ("${layout}")` };
  return null;
}

function ropeLayoutContradiction(c: Record<string, unknown>, t: Record<string, unknown>): RecordedCheck {
  const rec = recordedRopeRows(t);
  if (!rec) return { findings: [], supersedes: [] };
  const declared = c.rope_interleave === false ? 'half' : 'interleaved';
  if (rec.rows === declared) return { findings: [], supersedes: [] };
  if (rec.rows === 'interleaved') {
    return {
      supersedes: ['rope-layout'],
      findings: [{
        rule: 'recorded-rope-layout',
        impact: { transformers: 'incorrect', vllm: 'note', sglang: 'note', 'llama.cpp': 'note' },
        message: `config.json says rope_interleave: false (rotate-half pairs) but ${rec.where}: the config contradicts the weights`,
        effect: {
          transformers: 'it honours rope_interleave: false and pairs q_pe/k_pe elements rotate-half, which are not the pairs the rows hold',
          vllm: 'RoPE always rotates adjacent pairs (is_neox_style=False), which is what the rows hold: correct despite the config',
          sglang: 'RoPE always rotates adjacent pairs (is_neox_style=False), which is what the rows hold: correct despite the config',
          'llama.cpp': 'deepseek2 always rotates adjacent pairs, which is what the rows hold: correct despite the config',
        },
        fix: 'set "rope_interleave": true in config.json (the rows are interleaved, as transmla.json records)',
      }],
    };
  }
  return {
    supersedes: [],
    findings: [{
      rule: 'recorded-rope-layout',
      impact: { transformers: 'incorrect', vllm: 'incorrect', sglang: 'incorrect', 'llama.cpp': 'incorrect' },
      message: `config.json says rope_interleave ${JSON.stringify(c.rope_interleave ?? true)} (adjacent pairs) but ${rec.where} records rotate-half rows: every stock engine pairs the wrong elements`,
      fix: 'transmla export <folder> --target deepseek-v3 (permutes the rows into interleaved pairs)',
    }],
  };
}

const SHAPE_KEYS: [config: string, recorded: string][] = [
  ['kv_lora_rank', 'kvLoraRank'], ['q_lora_rank', 'qLoraRank'], ['qk_rope_head_dim', 'qkRopeHeadDim'],
  ['qk_nope_head_dim', 'qkNopeHeadDim'], ['v_head_dim', 'vHeadDim'],
];

/** The MLA shape transmla.json records against config.json's. */
function shapeContradiction(c: Record<string, unknown>, t: Record<string, unknown>): Finding[] {
  const p = isObj(t.parameters) ? t.parameters : null;
  if (!p) return [];
  const diffs = SHAPE_KEYS.filter(([ck, rk]) => rk in p && (c[ck] ?? null) !== (p[rk] ?? null))
    .map(([ck, rk]) => `${ck} ${JSON.stringify(c[ck] ?? null)} in config.json, ${JSON.stringify(p[rk] ?? null)} in transmla.json`);
  if (diffs.length === 0) return [];
  return [{
    rule: 'recorded-shape',
    impact: ALL('incorrect'),
    message: `config.json and transmla.json disagree on the MLA shape (${diffs.join('; ')}): every stock engine builds the layers config.json describes, not the ones the weights were written as`,
    fix: 'restore the shape transmla.json records in config.json (or convert again)',
  }];
}

/** The rope_scaling the strict export was calibrated and measured with, against config.json's. */
function ropeScalingContradiction(c: Record<string, unknown>, t: Record<string, unknown>): Finding[] {
  const p = isObj(t.parameters) ? t.parameters : null;
  if (t.variant !== STOCK_VARIANT || !p || typeof p.ropeScaling !== 'string') return [];
  const recorded = p.ropeScaling === 'none' ? null : p.ropeScaling;
  const declared = c.rope_scaling === undefined || c.rope_scaling === null ? null : JSON.stringify(c.rope_scaling);
  if (recorded === declared) return [];
  return [{
    rule: 'recorded-rope-scaling',
    impact: ALL('incorrect'),
    message: `config.json has rope_scaling ${declared ?? 'none'} but transmla.json records ${recorded ?? 'none'}, the RoPE the weights were exported, calibrated and measured with: every stock engine applies config.json's`,
    fix: `restore "rope_scaling": ${recorded ?? 'null'} in config.json`,
  }];
}

/** Stored tensor dtype against config.json's torch_dtype (what --dtype auto casts to). */
function dtypeContradiction(c: Record<string, unknown>, f: FolderFacts): Finding[] {
  const stored = new Set([...f.tensors.values()].map((x) => x.dtype));
  const torch: Record<string, string> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };
  const declared = c.torch_dtype ?? c.dtype;
  if (stored.size !== 1 || typeof declared !== 'string') return [];
  const actual = torch[[...stored][0]!];
  if (!actual || actual === declared) return [];
  return [{
    rule: 'recorded-dtype',
    impact: ALL('note'),
    message: `config.json says torch_dtype ${declared} but every tensor is stored as ${actual}: engines run in ${declared} by default (--dtype auto), not in the precision the weights have`,
    fix: `set "torch_dtype": "${actual}" in config.json`,
  }];
}

/** Every cross-check of config.json against the folder's own records. */
export function checkRecordedFacts(f: FolderFacts): RecordedCheck {
  const c = f.config;
  const findings = dtypeContradiction(c, f);
  const t = f.transmla;
  if (!t || t.tool !== 'transmla') return { findings, supersedes: [] };
  const rope = ropeLayoutContradiction(c, t);
  return {
    findings: [...rope.findings, ...shapeContradiction(c, t), ...ropeScalingContradiction(c, t), ...findings],
    supersedes: rope.supersedes,
  };
}
