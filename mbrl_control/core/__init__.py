"""The pure core of mbrl_control: batched float32 torch, no ROS imports anywhere below here."""
