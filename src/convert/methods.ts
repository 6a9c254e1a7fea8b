// Conversion methods by name, for commands that choose one (sweep). Every method takes the
// same options and returns the same report, so callers pass the name through unchanged.
import { convertModel, type ConvertOptions, type ConvertReport } from './convert.js';

export type ConvertMethod = (o: ConvertOptions) => Promise<ConvertReport>;

export const CONVERT_METHODS: Readonly<Record<string, ConvertMethod>> = {
  transmla: convertModel,
};

export function convertMethod(name: string): ConvertMethod {
  const m = CONVERT_METHODS[name];
  if (!m) throw new Error(`unknown conversion method "${name}"; known: ${Object.keys(CONVERT_METHODS).join(', ')}`);
  return m;
}
