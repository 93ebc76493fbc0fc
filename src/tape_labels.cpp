// The tape's labels and its readable forms: anomaly messages, dumps and Graphviz.
#include "cellgrad/tape.hpp"

namespace cellgrad {

// ---- Tape: labels and dumps ------------------------------------------------------------------

template <class T>
void Tape<T>::push_label(const std::string& label) {
    const std::string& outer = label_stack_.empty() ? labels_[0] : labels_[label_stack_.back()];
    labels_.push_back(outer.empty() ? label : outer + " " + label);
    label_stack_.push_back(static_cast<std::uint32_t>(labels_.size() - 1));
}

template <class T>
void Tape<T>::pop_label() {
    if (!label_stack_.empty()) {
        label_stack_.pop_back();
    }
}

template <class T>
const std::string& Tape<T>::label_text(std::uint32_t label) const {
    return labels_.at(label);
}

template <class T>
std::string Tape<T>::describe(NodeId id) const {
    const Node<T>& node = nodes_.at(id);
    if (node.parameter != nullptr) {
        return fmt::format("param '{}'", node.parameter->name);
    }
    if (node.label == 0) {
        return fmt::format("'{}' (node {})", node.op, id);
    }
    return fmt::format("'{}' [{}] (node {})", node.op, labels_[node.label], id);
}

template <class T>
std::string Tape<T>::dump() const {
    std::string text;
    for (NodeId id = 0; id < nodes_.size(); ++id) {
        std::string input_list;
        for (NodeId input : inputs(id)) {
            input_list += fmt::format("{}{}", input_list.empty() ? "" : ", ", input);
        }
        text += fmt::format("%{} = {}({}) {}{}\n", id, describe(id), input_list,
                            nodes_[id].value.shape(), nodes_[id].requires_grad ? " grad" : "");
    }
    return text;
}

template <class T>
std::string Tape<T>::to_dot() const {
    std::string text = "digraph tape {\n  rankdir=LR;\n";
    for (NodeId id = 0; id < nodes_.size(); ++id) {
        const Node<T>& node = nodes_[id];
        std::string name = node.parameter != nullptr ? node.parameter->name : node.op;
        if (node.label != 0) {
            name += "\\n" + labels_[node.label];
        }
        text += fmt::format("  n{} [label=\"{}\\n{}\"{}];\n", id, name, node.value.shape(),
                            node.parameter != nullptr ? ", shape=box" : "");
        for (NodeId input : inputs(id)) {
            text += fmt::format("  n{} -> n{};\n", input, id);
        }
    }
    return text + "}\n";
}

// The members defined here; tape.cpp instantiates the rest.
template void Tape<float>::push_label(const std::string&);
template void Tape<float>::pop_label();
template const std::string& Tape<float>::label_text(std::uint32_t) const;
template std::string Tape<float>::describe(NodeId) const;
template std::string Tape<float>::dump() const;
template std::string Tape<float>::to_dot() const;
template void Tape<double>::push_label(const std::string&);
template void Tape<double>::pop_label();
template const std::string& Tape<double>::label_text(std::uint32_t) const;
template std::string Tape<double>::describe(NodeId) const;
template std::string Tape<double>::dump() const;
template std::string Tape<double>::to_dot() const;

} // namespace cellgrad
