"""What the flow needs beside the stack's parts: where steps run (compute), cards and plots."""
