"""FuxiCTR's DCNv2, reproduced from the FuxiCTR repository for the peer benchmark.

The `fuxictr` package on PyPI (2.3.10) ships the library (layers, BaseModel, FeatureMap) but
not the model zoo, where the standard DCNv2 lives: model_zoo/DCNv2/src/DCNv2.py of
https://github.com/reczoo/FuxiCTR (Apache License 2.0, copyright the FuxiCTR authors and
Huawei Technologies). `DCNv2` below is that file's class with its code unchanged (docstrings
shortened, black formatting): the same FuxiCTR building blocks (FeatureEmbedding, CrossNetV2,
CrossNetMix, MLP_Block), the same four model structures, BaseModel's compile (optimizer and
loss by name) and reset_parameters (xavier_normal_ Linear weights, zero biases,
normal(std=1e-4) embeddings). Training goes through BaseModel.train_step, FuxiCTR's own step
(forward, BCE on the sigmoid output, regularization, backward, clip_grad_norm_ at
max_gradient_norm, optimizer step).

`feature_map_for` describes the benchmark's categorical features the way FuxiCTR's
FeatureProcessor would, as a feature_map.json loaded with FeatureMap.load.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from fuxictr.features import FeatureMap
from fuxictr.pytorch.layers import CrossNetMix, CrossNetV2, FeatureEmbedding, MLP_Block
from fuxictr.pytorch.models import BaseModel
from torch import nn


class DCNv2(BaseModel):
    """Deep & Cross Network v2, as in FuxiCTR's model_zoo/DCNv2/src/DCNv2.py.

    Takes FuxiCTR's batch dict (feature name -> 1-D tensor of ids, label name -> labels);
    returns {"y_pred": B X 1 probabilities}.
    """

    def __init__(
        self,
        feature_map,
        model_id="DCNv2",
        gpu=-1,
        model_structure="parallel",
        use_low_rank_mixture=False,
        low_rank=32,
        num_experts=4,
        learning_rate=1e-3,
        embedding_dim=10,
        stacked_dnn_hidden_units=[],
        parallel_dnn_hidden_units=[],
        dnn_activations="ReLU",
        num_cross_layers=3,
        net_dropout=0,
        batch_norm=False,
        embedding_regularizer=None,
        net_regularizer=None,
        **kwargs,
    ):
        super(DCNv2, self).__init__(
            feature_map,
            model_id=model_id,
            gpu=gpu,
            embedding_regularizer=embedding_regularizer,
            net_regularizer=net_regularizer,
            **kwargs,
        )
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        input_dim = feature_map.sum_emb_out_dim()
        if use_low_rank_mixture:
            self.crossnet = CrossNetMix(
                input_dim, num_cross_layers, low_rank=low_rank, num_experts=num_experts
            )
        else:
            self.crossnet = CrossNetV2(input_dim, num_cross_layers)
        self.model_structure = model_structure
        assert self.model_structure in [
            "crossnet_only",
            "stacked",
            "parallel",
            "stacked_parallel",
        ], "model_structure={} not supported!".format(self.model_structure)
        if self.model_structure in ["stacked", "stacked_parallel"]:
            self.stacked_dnn = MLP_Block(
                input_dim=input_dim,
                output_dim=None,  # output hidden layer
                hidden_units=stacked_dnn_hidden_units,
                hidden_activations=dnn_activations,
                output_activation=None,
                dropout_rates=net_dropout,
                batch_norm=batch_norm,
            )
            final_dim = stacked_dnn_hidden_units[-1]
        if self.model_structure in ["parallel", "stacked_parallel"]:
            self.parallel_dnn = MLP_Block(
                input_dim=input_dim,
                output_dim=None,  # output hidden layer
                hidden_units=parallel_dnn_hidden_units,
                hidden_activations=dnn_activations,
                output_activation=None,
                dropout_rates=net_dropout,
                batch_norm=batch_norm,
            )
            final_dim = input_dim + parallel_dnn_hidden_units[-1]
        if self.model_structure == "stacked_parallel":
            final_dim = stacked_dnn_hidden_units[-1] + parallel_dnn_hidden_units[-1]
        if self.model_structure == "crossnet_only":  # only CrossNet
            final_dim = input_dim
        self.fc = nn.Linear(final_dim, 1)
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb = self.embedding_layer(X, flatten_emb=True)
        cross_out = self.crossnet(feature_emb)
        if self.model_structure == "crossnet_only":
            final_out = cross_out
        elif self.model_structure == "stacked":
            final_out = self.stacked_dnn(cross_out)
        elif self.model_structure == "parallel":
            dnn_out = self.parallel_dnn(feature_emb)
            final_out = torch.cat([cross_out, dnn_out], dim=-1)
        elif self.model_structure == "stacked_parallel":
            final_out = torch.cat([self.stacked_dnn(cross_out), self.parallel_dnn(feature_emb)], dim=-1)
        y_pred = self.fc(final_out)
        y_pred = self.output_activation(y_pred)
        return_dict = {"y_pred": y_pred}
        return return_dict


def feature_map_for(
    directory: Path, cardinalities: dict[str, int], label: str, embedding_dim: int
) -> FeatureMap:
    """A FeatureMap of categorical features with ids in [0, cardinality) and one label.

    Written as feature_map.json into directory and loaded with FeatureMap.load, the path
    FuxiCTR's own experiments take. The ids are used as they are (vocab_size = cardinality,
    no padding or out-of-vocabulary row), so the embedding tables have the same rows as ours.
    """
    dataset_id = "smt_synthetic"
    features = [
        {name: {"source": "", "type": "categorical", "vocab_size": cardinality}}
        for name, cardinality in cardinalities.items()
    ]
    spec = {
        "dataset_id": dataset_id,
        "num_fields": len(features),
        "total_features": sum(cardinalities.values()),
        "input_length": len(features),
        "labels": [label],
        "features": features,
    }
    path = Path(directory) / "feature_map.json"
    path.write_text(json.dumps(spec, indent=4))
    feature_map = FeatureMap(dataset_id, str(directory))
    feature_map.load(str(path), params={"embedding_dim": embedding_dim})
    return feature_map
