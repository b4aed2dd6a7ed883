"""What every part of relaygate agrees on: envelope, codec, topics, config and the bus."""
