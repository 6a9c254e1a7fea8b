// sweep.json (`transmla sweep`), as types: read by report/, written by convert/sweep.ts.

export interface SweepScore { ppl: number; kl: number; top1: number }

export interface SweepPoint {
  method: string;
  kvFractionRequested: number;
  kvFraction: number;
  kvLoraRank: number;
  /** The cache layout the method chose, in words. */
  shape: string;
  bytesPerTokenBefore: number;
  bytesPerTokenAfter: number;
  evaluations: { text: string; ctx: number; chunks: number; original: SweepScore; partialRope: SweepScore; mla: SweepScore }[];
  convertSeconds: number;
  /** Wall-clock seconds of the whole point: conversion and evaluation. */
  seconds: number;
  output: string | null;
}

export interface SweepReport {
  tool: 'transmla sweep';
  created: string;
  model: string;
  methods: string[];
  fractions: number[];
  convention: string | null;
  points: SweepPoint[];
}
