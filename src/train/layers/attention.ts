// What a decoder block needs from its attention, whatever the variant (GQA/MHA, DeepSeek MLA,
// MHA2MLA): forward on the normed hidden states of one packed row, keeping what backward needs,
// and backward from the output gradient to the input gradient (parameter gradients accumulate).
import type { Vec } from '../backend.js';
import type { Param } from '../params.js';
import type { Segments } from './causal-attention.js';

/** One packed row as the layers see it. */
export interface RowLayout {
  T: number;
  /** Position of each token inside its document (RoPE). */
  positions: Int32Array;
  /** Start of each document segment (attention never crosses one). */
  segments: Segments;
}

export interface TrainAttention {
  /** out [T×D] from x [T×D]; activations for backward stay inside the layer until the next forward. */
  forward(x: Vec, row: RowLayout, out: Vec): void;
  /** dx [T×D] (written) from dOut [T×D], using the activations of the last forward on x. */
  backward(x: Vec, row: RowLayout, dOut: Vec, dx: Vec): void;
  params(): Param[];
}
