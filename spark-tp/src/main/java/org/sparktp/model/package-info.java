/**
 * The model directory format: {@code config.json} (the layer list, {@link org.sparktp.model.ModelConfig})
 * and weights in safetensors ({@code model.safetensors}, or several files listed by
 * {@code model.safetensors.index.json}) in PyTorch's layout, so a PyTorch {@code state_dict} saved with
 * safetensors loads as it is.
 *
 * <ul>
 *   <li>{@link org.sparktp.model.ModelDirectory}: opens and validates a directory (its layer list built into
 *       ops by {@code ConfigGraph}: {@link org.sparktp.model.ModelDirectory#graph()}), loads it whole as a
 *       {@link org.sparktp.model.LayerModel}, or reads one rank's rows or columns of a tensor;
 *   <li>{@link org.sparktp.model.LayerModel}: a layer list with its weights in memory, built in code with its
 *       builder; {@link org.sparktp.model.ModelWriter} writes one as a directory;
 *   <li>{@link org.sparktp.model.SafetensorsFile} and {@link org.sparktp.model.SafetensorsWriter}: one
 *       safetensors file, read with positioned reads through Hadoop's {@code FileSystem} ({@code file:},
 *       {@code hdfs:}, {@code s3a:} …), written in F32, F16 or BF16.
 * </ul>
 */
package org.sparktp.model;
