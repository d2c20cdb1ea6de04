"""Training: fine-tuning, masked-LM pretraining, distillation, and the optimiser / budget machinery they share."""
