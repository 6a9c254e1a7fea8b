// A converted folder with a measured bench.json and its report.html, made for report tests:
// TinyStories-656K converted with a small calibration set, benchmarked at two short contexts.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { convertModel } from '../../src/convert/convert.js';
import { runBench } from '../../src/eval/bench.js';
import { writeReport } from '../../src/report/report.js';
import { mustAsset } from './assets.js';

export const FIXTURE_MODEL = 'models/TinyStories-656K';

export function tinyConvertOptions(): { calib: string; evalText: string } {
  return {
    calib: mustAsset('text/tinystories/tinystories_train_lowercased_sample.txt'),
    evalText: mustAsset('text/tinystories/tinystories_val_sample.txt'),
  };
}

export async function buildReportFixture(dir: string, o: { llamaCpp: boolean }): Promise<{ folder: string; report: string }> {
  const t = tinyConvertOptions();
  const folder = join(dir, 'mla');
  await convertModel({
    model: mustAsset(FIXTURE_MODEL), out: folder, kvLoraRank: 24, ropeDim: 8, freqFold: 2,
    calib: t.calib, calibSamples: 16, calibSeqLen: 64,
    evalTexts: [{ path: t.evalText, mode: 'file' }], evalCtx: 128, evalChunks: 2,
  });
  const bench = await runBench({ model: folder, contexts: [32, 96], decodeTokens: 4, reps: 1, llamaCpp: o.llamaCpp, bandwidthBytes: 32 * 2 ** 20 });
  writeFileSync(join(folder, 'bench.json'), JSON.stringify(bench, null, 2));
  return { folder, report: await writeReport(folder) };
}
