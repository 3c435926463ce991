"""Names and defaults the command line needs before it imports torch (its help, argument choices):
said once here, used by the tools that own them. Imports nothing."""

EXPORT_FORMATS = ("safetensors", "torchscript", "onnx", "pt2")  # tailcon export --format
BENCH_STEPS, BENCH_WARMUP = 20, 3  # tailcon bench: timed steps, and untimed ones first
REPORT_TSNE_POINTS = 2000  # tailcon report: test images in the t-SNE figure
CORRUPTION_SEVERITIES = (1, 2, 3, 4, 5)  # tailcon eval --corruptions (CIFAR-10-C's five levels)
CORRUPTION_MAX_IMAGES = 1000  # test images per corruption and severity
