// A converted folder with a measured bench.json and its report.html, made for report tests:
// TinyStories-656K converted with a small calibration set, benchmarked at two short contexts.
import { copyFileSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { convertModel } from '../../src/convert/transmla.js';
import { convertMha2mla } from '../../src/convert/mha2mla.js';
import { runBench } from '../../src/bench/bench.js';
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
    variant: 'exact',
    model: mustAsset(FIXTURE_MODEL), out: folder, kvLoraRank: 24, ropeDim: 8, freqFold: 2,
    calib: t.calib, calibSamples: 16, calibSeqLen: 64,
    evalTexts: [{ path: t.evalText, mode: 'file' }], evalCtx: 128, evalChunks: 2,
  });
  const bench = await runBench({ model: folder, contexts: [32, 96], decodeTokens: 4, reps: 1, llamaCpp: o.llamaCpp, bandwidthBytes: 32 * 2 ** 20 });
  writeFileSync(join(folder, 'bench.json'), JSON.stringify(bench, null, 2));
  return { folder, report: await writeReport(folder) };
}

/**
 * An MHA2MLA folder of the same model (S_2-norm selection, so its scores are recorded; SVD_joint),
 * written with its report.html by the converter. With `benchFrom`, that folder's bench.json is
 * copied in and the report rebuilt, so the page has its speed section too.
 */
export async function buildMha2mlaFixture(dir: string, o: { benchFrom?: string } = {}): Promise<{ folder: string; report: string }> {
  const t = tinyConvertOptions();
  const folder = join(dir, 'mha2mla');
  await convertMha2mla({
    model: mustAsset(FIXTURE_MODEL), out: folder, kvFraction: 0.25, selection: '2norm', init: 'joint',
    calib: t.calib, calibSamples: 8, calibSeqLen: 64,
    evalTexts: [{ path: t.evalText, mode: 'file' }], evalCtx: 128, evalChunks: 1,
  });
  const report = join(folder, 'report.html');
  if (o.benchFrom && existsSync(join(o.benchFrom, 'bench.json'))) {
    copyFileSync(join(o.benchFrom, 'bench.json'), join(folder, 'bench.json'));
    return { folder, report: await writeReport(folder) };
  }
  return { folder, report };
}
