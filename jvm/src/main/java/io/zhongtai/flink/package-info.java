/**
 * zhongtai's JVM functions: generic, semantics-free hot-path helpers of the Flink job.
 *
 * <p>What a tag, rule, trait or merge means is written once, in Python; the functions here only
 * parse, pack and move data. Each has a Python reference and a differential test (docs/jvm.md).
 */
package io.zhongtai.flink;
