// Child of test/mixtral-stream-memory.test.ts (run under node --expose-gc): converts a random
// Mixtral whose experts dominate its size with the streaming default convert (--no-eval, stock
// output) and prints, after each pass-2 layer, the bytes of live array buffers after a full GC.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { convertModel } from '../../src/convert/transmla.js';
import { writeCheckpoint } from '../../src/io/checkpoint.js';
import { writeHfFolderExtras } from '../../src/io/hf-folder.js';
import { randomMixtral } from './random-mixtral.js';

const [dir, vocabDir, calib] = process.argv.slice(2) as [string, string, string];
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');
const m = randomMixtral({ hidden: 64, heads: 4, kvHeads: 2, inter: 4096, vocab: 32000, layers: 6, experts: 8, topK: 2, seed: 5 });
const src = join(dir, 'src');
mkdirSync(src, { recursive: true });
await writeCheckpoint(src, [...m.src.map].map(([n, tensor]) => ({ name: n, tensor })));
writeFileSync(join(src, 'config.json'), JSON.stringify(m.json));
writeHfFolderExtras(vocabDir, src);
const live: number[] = [];
await convertModel({
  model: src, out: join(dir, 'out'), calib, kvLoraRank: 24, ropeDim: 8, freqFold: 2, calibSamples: 2, calibSeqLen: 32, evaluate: false,
  log: (line) => { if (/^ {2}pass 2 layer \d+\/6/.test(line)) { gc(); live.push(process.memoryUsage().arrayBuffers); } },
});
// One layer's experts: 8 × 3 × 64 × 4096 f32 (24 MiB), well above the one-time buffers of the last layer (the 32000 × 64 head, 7.8 MiB).
process.stdout.write(JSON.stringify({ live, layerExpertBytes: 8 * 3 * 64 * 4096 * 4 }) + '\n');
