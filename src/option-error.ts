// An option the caller gave is missing, malformed, contradictory or out of range (for this input).
// The library throws it where only it can tell (e.g. a rank larger than the model allows); the
// CLI prints it with the command's usage and exits 2, like a flag it rejects itself.
export class OptionError extends Error {
  override name = 'OptionError';
}
