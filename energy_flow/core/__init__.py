"""The energy-flow model: lattice geometry, the shared neuron and carrier, and the processor."""

from energy_flow.core.carrier import CarrierOutput, EnergyCarrier
from energy_flow.core.collection import OutputCollector
from energy_flow.core.lattice import EnergyLattice, FlowState
from energy_flow.core.mappers import InputMapper, OutputMapper
from energy_flow.core.neuron import SimpleNeuron
from energy_flow.core.processor import FlowProcessor, PropagationResult

__all__ = ["CarrierOutput", "EnergyCarrier", "EnergyLattice", "FlowProcessor", "FlowState",
           "InputMapper", "OutputCollector", "OutputMapper", "PropagationResult", "SimpleNeuron"]
