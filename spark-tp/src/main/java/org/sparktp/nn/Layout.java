package org.sparktp.nn;

/**
 * How an activation {@code [rows, width]} is held across the ranks of a group (as in PyTorch DTensor).
 *
 * <ul>
 *   <li>{@code REPLICATED}: every rank holds the whole tensor.
 *   <li>{@code SHARDED}: rank {@code r} holds a balanced column block of it.
 *   <li>{@code PARTIAL}: every rank holds a full-width summand; the tensor is the sum over ranks.
 * </ul>
 */
public enum Layout {
  REPLICATED,
  SHARDED,
  PARTIAL
}
