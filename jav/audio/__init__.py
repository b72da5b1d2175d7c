"""Audio signal processing in JAX: STFT, mel filters, log-mel features and
Griffin-Lim, jittable and batched over clips (jav.data.mel is the NumPy/librosa
reference they are tested against)."""
