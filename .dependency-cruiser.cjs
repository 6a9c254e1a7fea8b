// The layering of src/ (docs/architecture.md), checked by `npm test` (scripts/run-tests.mjs runs
// `depcruise` first). Data flows one way: a layer may import from the layers before it, never
// from one after it, and nothing may import in a cycle.
const LAYERS = [
  { name: 'base', path: '^src/(kernels|linalg|schema)/|^src/(tensor|option-error)\\.ts$' },
  { name: 'io', path: '^src/(io|tokenizer)/' },
  { name: 'render', path: '^src/report/' },
  { name: 'blocks', path: '^src/models/|^src/train/(layers/|backend\\.ts|params\\.ts|loss\\.ts)' },
  { name: 'arch', path: '^src/arch/' },
  { name: 'eval', path: '^src/eval/' },
  { name: 'pipeline', path: '^src/convert/|^src/train/(model|finetune|data|checkpoint|schedule|adamw|loss-curve)\\.ts$' },
  { name: 'targets', path: '^src/(export|bench|validate)/' },
  { name: 'apps', path: '^src/(serve|cli)/|^src/index\\.ts$' },
];

module.exports = {
  forbidden: [
    { name: 'no-circular', severity: 'error', comment: 'import cycles', from: {}, to: { circular: true } },
    ...LAYERS.slice(0, -1).map((layer, i) => ({
      name: `layer-${layer.name}`,
      severity: 'error',
      comment: `${layer.name} may import only from ${LAYERS.slice(0, i + 1).map((l) => l.name).join(', ')}`,
      from: { path: layer.path },
      to: { path: LAYERS.slice(i + 1).map((l) => `(${l.path})`).join('|') },
    })),
    {
      name: 'src-is-self-contained',
      severity: 'error',
      comment: 'the library imports nothing from tests, benchmarks or the fuzzer',
      from: { path: '^src/' },
      to: { path: '^(test|bench|fuzz)/' },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    includeOnly: '^src/',
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
