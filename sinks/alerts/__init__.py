"""The alerts sink: stores detections once and publishes each episode state once."""
